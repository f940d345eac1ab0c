"""The supervisor owns its tasks and shuts down in reverse order of registration."""

import asyncio
import os
import signal

from peerphone.net.supervisor import Supervisor


def test_shutdown_steps_run_in_reverse_and_tasks_are_cancelled_on_sigterm():
    order: list[str] = []
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def main() -> None:
        sup = Supervisor()
        sup.on_shutdown("close the socket", lambda: order.append("close"))

        async def leave() -> None:
            await asyncio.sleep(0)
            order.append("leave")

        sup.on_shutdown("leave the overlay", leave)
        loop = asyncio.get_running_loop()

        async def started() -> None:
            sup.spawn(forever())
            loop.call_soon(os.kill, os.getpid(), signal.SIGTERM)
            await asyncio.Event().wait()

        await asyncio.wait_for(sup.run(started), 10)

    asyncio.run(main())
    assert order == ["leave", "close"]
    assert cancelled.is_set()


def test_run_ends_when_main_returns():
    async def main() -> str:
        sup = Supervisor()
        done: list[str] = []
        sup.on_shutdown("note", lambda: done.append("shut"))

        async def quick() -> None:
            await asyncio.sleep(0)

        await asyncio.wait_for(sup.run(quick), 10)
        return done[0]

    assert asyncio.run(main()) == "shut"
