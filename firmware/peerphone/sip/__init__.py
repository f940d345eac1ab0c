"""Placeholder: the SIP front (registrar/proxy) and the pjsua2 handset arrive with the SIP issue."""
