"""The phone's hardware: board files (`board.py`); GPIO through gpiozero, ALSA, the battery
and link quality come next (issues 12 and 14)."""
