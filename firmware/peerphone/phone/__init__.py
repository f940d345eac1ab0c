"""Placeholder: the handset state machine (hook, keypad, ringer, dial plan) arrives with the hardware work."""
