"""Event loop choice: uvloop where it is installed, plain asyncio otherwise."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


SOCKET_BUFFER_BYTES = 4 << 20  # bursts (a replica handover, a REGISTER storm) are queued, not dropped


def widen_socket_buffers(sock: Any) -> None:
    """Ask for socket buffers that hold a burst; the kernel caps them at net.core.[rw]mem_max
    (the default of about 200 KB holds only some 250 datagrams). `sock`: a socket, or the
    stand-in a transport's `get_extra_info("socket")` gives (None: nothing to widen)."""
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        except OSError:
            pass  # a smaller buffer still works


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class DeadlineTimer:
    """The one loop timer of a driver: it follows a sans-I/O object's next deadline (ms on the
    loop's clock) and calls `fire` when it comes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[], None]) -> None:
        self._loop = loop
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None
        self._at_ms: int | None = None

    def follow(self, deadline_ms: int | None) -> None:
        if deadline_ms == self._at_ms:
            return
        self.cancel()
        self._at_ms = deadline_ms
        if deadline_ms is not None:
            self._handle = self._loop.call_at(deadline_ms / 1000, self._fired)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._at_ms = None

    def _fired(self) -> None:
        self._handle = None
        self._at_ms = None
        self._fire()
