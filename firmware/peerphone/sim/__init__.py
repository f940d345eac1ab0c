"""Placeholder: the deterministic simulator of the core arrives with the simulator issue."""
