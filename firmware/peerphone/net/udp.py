"""The UDP driver of `PeerNode`: real sockets, the loop's monotonic clock, one timer.

It owns no protocol logic: bytes and time go into the node; datagrams, one
deadline and events come out. Commands return futures that the node's
`RequestCompleted` events resolve.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import Any, Callable

from ..core.events import Event, Joined, JoinFailed, Left, NodeFailed, RequestCompleted, Tunnelled
from ..core.ids import short
from ..core.peer import PeerConfig, PeerNode, make_peer
from ..core.wire.messages import Addr, DataModel, Entry, Error, FetchAns, NodeInfo, StatAns
from .loop import DeadlineTimer, widen_buffers

log = logging.getLogger("peerphone.net")
REQUEST_TIMEOUT_S = 10.0


class OverlayError(Exception):
    """A request the overlay answered with an error, or that timed out."""


class UdpDriver(asyncio.DatagramProtocol):
    def __init__(self, make_node: Callable[[Addr, int], PeerNode]) -> None:
        self.node: PeerNode | None = None
        self._loop = asyncio.get_running_loop()
        self._transport: Any = None
        self._timer = DeadlineTimer(self._loop, self._on_timer)
        self._waiting: dict[int, Callable[[RequestCompleted], None]] = {}
        self.joined: asyncio.Future[None] = self._loop.create_future()
        self.left: asyncio.Future[None] = self._loop.create_future()
        self.on_tunnel: Callable[[int, bytes], None] | None = None  # (origin node, payload)
        self.on_node_failed: Callable[[], None] | None = None  # the overlay may have lost copies

    @classmethod
    async def open(cls, listen: Addr, make_node: Callable[[Addr, int], PeerNode]) -> "UdpDriver":
        loop = asyncio.get_running_loop()
        transport, driver = await loop.create_datagram_endpoint(lambda: cls(make_node), local_addr=listen)
        # The node is made here, not in connection_made: uvloop may call that later.
        driver._transport = transport
        widen_buffers(transport)
        host, port = transport.get_extra_info("sockname")[:2]
        driver.node = make_node((host, port), driver.now_ms())
        return driver

    def now_ms(self) -> int:
        return int(self._loop.time() * 1000)

    # -- asyncio callbacks --

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.node is None:
            return
        if self.node.receive_datagram(data, (addr[0], addr[1]), now_ms=self.now_ms()):
            self._pump()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a dead peer: the transaction layer notices the silence.
        log.debug("socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
        waiting, self._waiting = self._waiting, {}
        for handle, done in waiting.items():
            done(RequestCompleted(handle, None, Error(0, "driver closed"), 0, None))

    # -- the node's outputs --

    def _pump(self) -> None:
        node = self.node
        assert node is not None and self._transport is not None
        for data, addr in node.datagrams_to_send():
            try:
                self._transport.sendto(data, addr)
            except (OSError, ValueError) as e:  # an address the kernel refuses must not cost the rest
                node.counters["drop.unsendable"] += 1
                log.debug("cannot send to %s: %s", addr, e)
        for event in node.events():
            self._on_event(event)
        self._timer.follow(node.next_deadline_ms())

    def _on_timer(self) -> None:
        assert self.node is not None
        self.node.handle_timer(now_ms=self.now_ms())
        self._pump()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RequestCompleted):
            done = self._waiting.pop(event.handle, None)
            if done is not None:
                done(event)
        elif isinstance(event, Joined):
            log.debug("joined the overlay as %s", short(event.node_id))
            if not self.joined.done():
                self.joined.set_result(None)
        elif isinstance(event, JoinFailed):
            if not self.joined.done():
                self.joined.set_exception(OverlayError(f"join failed: {event.reason}"))
        elif isinstance(event, Left):
            log.info("left the overlay")
            if not self.left.done():
                self.left.set_result(None)
        elif isinstance(event, Tunnelled):
            if self.on_tunnel is not None:
                self.on_tunnel(event.origin, event.payload)
        elif isinstance(event, NodeFailed):
            log.info("node %s failed", short(event.node_id))
            if self.on_node_failed is not None:
                self.on_node_failed()

    # -- commands --

    def begin(self, start: Callable[[PeerNode, int], int], done: Callable[[RequestCompleted], None]) -> None:
        """Start a node command that returns a handle; `done` gets its completion (always, once)."""
        assert self.node is not None
        self._waiting[start(self.node, self.now_ms())] = done
        self._pump()

    async def request(self, start: Callable[[PeerNode, int], int]) -> RequestCompleted:
        """Start a node command that returns a handle, and wait for its completion."""
        fut: asyncio.Future[RequestCompleted] = self._loop.create_future()

        def done(event: RequestCompleted) -> None:
            if not fut.done():
                fut.set_result(event)

        self.begin(start, done)
        return await fut

    async def store(self, resource: int, kind: int, model: DataModel, entries: list[Entry],
                    timeout_s: float = REQUEST_TIMEOUT_S) -> RequestCompleted:
        """Store and wait; OverlayError when the overlay refuses or does not answer in time."""
        return await self._checked(lambda node, now: node.store(resource, kind, model, entries, now_ms=now),
                                   "store", timeout_s)

    async def fetch(self, resource: int, kind: int, timeout_s: float = REQUEST_TIMEOUT_S) -> FetchAns:
        done = await self._checked(lambda node, now: node.fetch(resource, kind, now_ms=now), "fetch", timeout_s)
        if not isinstance(done.answer, FetchAns):
            raise OverlayError("fetch: unexpected answer")
        return done.answer

    async def stat(self, peer: Addr, timeout_s: float = REQUEST_TIMEOUT_S) -> StatAns:
        """The diagnostics of the peer at `peer`, every page of them."""
        parts: list[StatAns] = []
        while not parts or len(parts) < parts[-1].pages:  # the last page knows best: counters come and go
            page = len(parts)
            done = await self._checked(lambda node, now: node.stat(peer, now_ms=now, page=page), "stat", timeout_s)
            if not isinstance(done.answer, StatAns) or done.answer.page != page:
                raise OverlayError("stat: unexpected answer")
            parts.append(done.answer)
        return StatAns.merged(parts)

    async def tunnel(self, node_id: int, payload: bytes, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        await self._checked(lambda node, now: node.tunnel(node_id, payload, now_ms=now), "tunnel", timeout_s)

    async def _checked(self, start: Callable[[PeerNode, int], int], what: str, timeout_s: float) -> RequestCompleted:
        try:
            done = await asyncio.wait_for(self.request(start), timeout_s)
        except asyncio.TimeoutError:
            raise OverlayError(f"{what}: no answer within {timeout_s:.0f} s") from None
        if done.error is not None:
            raise OverlayError(f"{what} failed: {done.error.reason}")
        return done

    def join(self, bootstrap: list[Addr]) -> None:
        assert self.node is not None
        self.node.join(bootstrap, now_ms=self.now_ms())
        self._pump()

    async def leave(self, timeout_s: float) -> None:
        assert self.node is not None
        self.node.leave(now_ms=self.now_ms())
        self._pump()
        try:
            await asyncio.wait_for(asyncio.shield(self.left), timeout_s)
        except asyncio.TimeoutError:
            log.warning("leave not acknowledged within %.1f s", timeout_s)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def system_node_factory(config: PeerConfig, advertise_host: str | None = None) -> Callable[[Addr, int], PeerNode]:
    """Wire a node to the operating system's randomness once its socket is bound;
    other nodes reach it at `advertise_host` (default: the bound host) and the bound port."""

    def make(bound: Addr, now_ms: int) -> PeerNode:
        me = NodeInfo(int.from_bytes(os.urandom(20), "big"), (advertise_host or bound[0], bound[1]))
        return make_peer(me, config, rng=random.Random(os.urandom(16)), entropy=os.urandom, now_ms=now_ms,
                         wall_offset_ms=time.time_ns() // 1_000_000 - now_ms)

    return make
