"""The handset's behaviour, sans-I/O: `machine.Handset` turns hook, keys and SIP events into
tones, ringer, lamps and SIP actions. `hw/` and `sip/ua.py` carry them out."""
