"""The supervisor: the one owner of every task (STYLE.md habit 8).

Tasks are started only through `spawn`, inside one TaskGroup; SIGINT and SIGTERM
ask for a stop; shutdown steps run in the reverse order of their registration
(so a peer leaves the overlay and hands its data over before its socket closes),
then whatever still runs is cancelled.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from typing import Any, Awaitable, Callable, Coroutine

log = logging.getLogger("peerphone.supervisor")

ShutdownStep = Callable[[], Awaitable[None] | None]


class Supervisor:
    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._steps: list[tuple[str, ShutdownStep]] = []
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: list[Coroutine[Any, Any, Any]] = []  # spawned before run(): started by it

    def stop(self) -> None:
        self._stop.set()

    def on_shutdown(self, name: str, step: ShutdownStep) -> None:
        self._steps.append((name, step))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Run `coro` as a task of the group (None when spawned before run(), which starts it)."""
        if self._group is None:
            if self._stop.is_set():
                coro.close()
                raise RuntimeError("spawn after the supervisor stopped")
            self._pending.append(coro)
            return None
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self, main: Callable[[], Coroutine[Any, Any, Any]] | None = None) -> None:
        """Run until `main` returns (if given), a task fails, or a signal arrives."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, self.stop)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for coro in self._pending:
                    self.spawn(coro)
                self._pending.clear()
                if main is not None:
                    self.spawn(self._then_stop(main))
                await self._stop.wait()
                await self._shutdown()
                for task in list(self._tasks):
                    task.cancel()
        finally:
            self._group = None
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def _then_stop(self, main: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        try:
            await main()
        finally:
            self.stop()

    async def _shutdown(self) -> None:
        for name, step in reversed(self._steps):
            log.debug("shutdown: %s", name)
            result = step()
            if inspect.isawaitable(result):
                await result
