"""A peer flooded from many source ports stays in its neighbours' tables (issue 11): the
flood is limited per host, proven neighbours are not, so maintenance goes on. Real peer
processes on loopback; the flood is bounded and stops by itself."""

from __future__ import annotations

import asyncio
import socket
import time

from peerphone.app.config import DEFAULT_OVERLAY, overlay_id, parse_hostport
from peerphone.app.wiring import open_client
from peerphone.core.wire import encode
from peerphone.core.wire.messages import EMPTY, Code, Message, StatAns

from tests.procs import stop
from tests.sip.world import start_overlay

FLOOD_S = 5.0
PORTS = 256


async def _stats(addrs: list[str]) -> list[StatAns]:
    driver = await open_client(parse_hostport(addrs[0], 0), DEFAULT_OVERLAY)
    try:
        await driver.joined
        return [await driver.stat(parse_hostport(a, 0)) for a in addrs]
    finally:
        driver.close()


def _flood(target: str) -> int:
    host, port = target.rsplit(":", 1)
    ping = encode(Message(32, (4242,), (), 1, Code.PING, EMPTY), overlay_id(DEFAULT_OVERLAY))
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(PORTS)]
    sent = 0
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        end = time.monotonic() + FLOOD_S
        while time.monotonic() < end:
            for s in sockets:
                try:
                    s.sendto(ping, (host, int(port)))
                    sent += 1
                except BlockingIOError:
                    pass
    finally:
        for s in sockets:
            s.close()
    return sent


def test_a_peer_flooded_from_many_ports_stays_in_its_neighbours_tables():
    peers = start_overlay(3)
    try:
        victim = peers[0]
        sent = _flood(victim.addr)
        stats = asyncio.run(_stats([p.addr for p in peers]))
        flooded = next(s for s in stats if s.node_id == victim.node_id)
        others = [s for s in stats if s.node_id != victim.node_id]
        assert dict(flooded.counters).get("drop.rate", 0) > sent // 2  # the flood was there, and held back
        assert all(victim.node_id in (s.pred, *s.successors) for s in others)
        assert all(dict(s.counters).get("node_failed", 0) == 0 for s in stats)  # nobody was taken for dead
    finally:
        stop(peers)
