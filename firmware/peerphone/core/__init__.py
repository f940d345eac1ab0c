"""The sans-I/O core: bytes, `now_ms` and randomness in; datagrams, one deadline and events out.

Nothing here imports asyncio, socket, time, random, secrets, os or threading
(tests/core/test_imports.py checks it), so the same objects run on real sockets,
in the simulator and in unit tests.
"""
