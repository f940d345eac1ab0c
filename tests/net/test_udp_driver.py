"""The peer's UDP driver on a real loopback socket."""

from __future__ import annotations

import asyncio
import socket
import time

from peerphone.core.limits import TTL_INITIAL, Timing
from peerphone.core.peer import PeerConfig
from peerphone.core.wire import decode, encode
from peerphone.core.wire.messages import Code, Dest, DestKind, Message, StatAns
from peerphone.net.loop import run
from peerphone.net.udp import UdpDriver

from tests.net import node_factory

OVERLAY = 1
QUICK = Timing(rpc_retransmit_first_ms=20, rpc_transmissions_max=1)  # silent for 20 ms: timed out
QUEUED_AHEAD = 300  # more than one read per loop turn could get through before the timer


def test_an_answer_already_queued_is_read_before_the_timer_judges_silence() -> None:
    """A busy peer's answers wait in its own receive queue; its timers must not take that
    wait for the far end's silence (issue 11's storm declared live peers dead)."""

    async def main() -> None:
        # In clear: the far end is a plain socket, and what is tested is the driver's reading.
        driver = await UdpDriver.open(("127.0.0.1", 0), node_factory(PeerConfig(OVERLAY, QUICK)), links=False)
        far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        far.bind(("127.0.0.1", 0))
        far.settimeout(5)
        try:
            waiting = asyncio.ensure_future(driver.request(lambda node, now: node.stat(far.getsockname(), now_ms=now)))
            await asyncio.sleep(0)  # the request goes out
            data, back = far.recvfrom(2048)
            request = decode(data, OVERLAY)
            for _ in range(QUEUED_AHEAD):  # other traffic queued ahead of the answer
                far.sendto(b"\x00not a message", back)
            stat = StatAns(7, None, (), (), 0, 0, ())
            answer = Message(TTL_INITIAL, (*request.via, 7), (Dest(DestKind.NODE, request.via[0]),), request.txid,
                             Code.STAT_ANS, stat)
            far.sendto(encode(answer, OVERLAY), back)
            time.sleep(0.1)  # the loop is busy elsewhere past the request's whole wait
            done = await asyncio.wait_for(waiting, 5)
            assert done.error is None and done.answer == stat
            assert sum(n for what, n in driver.node.counters.items() if what.startswith("drop.")) == QUEUED_AHEAD
        finally:
            far.close()
            driver.close()

    run(main())  # the peer's own loop (uvloop where installed)


def test_a_closed_driver_fails_what_waits_and_closes_its_socket() -> None:
    async def main() -> None:
        driver = await UdpDriver.open(("127.0.0.1", 0), node_factory(PeerConfig(OVERLAY, Timing())))
        waiting = asyncio.ensure_future(driver.request(lambda node, now: node.stat(("127.0.0.1", 9), now_ms=now)))
        await asyncio.sleep(0)
        driver.close()
        driver.close()  # twice is harmless (the supervisor and a failing start may both close)
        done = await asyncio.wait_for(waiting, 5)
        assert done.error is not None and "closed" in done.error.reason

    run(main())  # the peer's own loop (uvloop where installed)

