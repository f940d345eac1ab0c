"""Placeholder: GPIO (RPi.GPIO and simulated backends), ALSA, battery and link quality arrive with the role work."""
