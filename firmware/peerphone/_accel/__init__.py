"""Placeholder: the native (cffi) routines and their pure-Python twins arrive with the native issue."""
