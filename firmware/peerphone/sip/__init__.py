"""SIP over the overlay: the parser (message, uri), RFC 3261 transactions (transaction), the
registrar and proxy front (front) and the Tunnel's fragmentation (tunnel), all sans-I/O; and
the pjsua2 handset (ua), the only module here that does I/O."""
