"""The UDP driver of `PeerNode`: a real socket, the loop's monotonic clock, one timer.

It owns no protocol logic: bytes and time go into the node; datagrams, one
deadline and events come out. Commands return futures that the node's
`RequestCompleted` events resolve. Between the socket and the node sit the node's links
(links.py): every datagram to or from another node travels sealed in one.

The driver reads its socket itself (not through an asyncio transport) so that it can
read everything already queued before a timer fires: a timer judges silence, and an
answer waiting in our own receive queue is not silence. A peer busy with a REGISTER
storm took its neighbours for dead because their answers sat behind thousands of
datagrams while its timers ran out (issue 11).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import socket
import time
from typing import Callable

from ..core.errors import ErrorCode, LocalProtocolError
from ..core.events import Attached, Event, Joined, JoinFailed, Left, NodeFailed, RequestCompleted, Tunnelled
from ..core.ids import short
from ..core.peer import PeerConfig, PeerNode, make_peer
from ..core.security import Identity
from ..core.wire.messages import Addr, DataModel, Entry, Error, FetchAns, StatAns
from .links import PLAIN, Links
from .loop import DeadlineTimer, widen_socket_buffers

log = logging.getLogger("peerphone.net")
REQUEST_TIMEOUT_S = 10.0
# Datagrams read per wake-up before the loop turns to its other sockets, and read before a
# timer fires: with 1,200-byte datagrams and ~100 µs of work each, about 0.2 s at most.
READS_PER_TURN_MAX = 2048
DATAGRAM_READ_BYTES = 65_535  # read whole, however large: the decoder refuses what is too big


class OverlayError(Exception):
    """A request the overlay answered with an error, or that timed out."""


class UdpDriver:
    def __init__(self, sock: socket.socket, make_node: Callable[[Addr, int], PeerNode], links: bool = True) -> None:
        """`links`: False sends datagrams in clear, to measure what links cost (`tools/bench`)
        and to test the driver's own reading with a plain socket as the far end."""
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._timer = DeadlineTimer(self._loop, self._on_timer)
        self._waiting: dict[int, Callable[[RequestCompleted], None]] = {}
        self.joined: asyncio.Future[None] = self._loop.create_future()
        self.left: asyncio.Future[None] = self._loop.create_future()
        self.on_tunnel: Callable[[Tunnelled], None] | None = None
        self.on_node_failed: Callable[[], None] | None = None  # the overlay may have lost copies
        self.on_attached: Callable[[int], None] | None = None  # a client's new admitting peer (its id)
        host, port = sock.getsockname()[:2]
        self._bound: Addr = (host, port)
        self._other: socket.socket | None = None  # the reach test's second port, opened when first needed
        self.node: PeerNode = make_node(self._bound, self.now_ms())
        self.links = Links(self.node.identity, lambda der: self.node.admits(der), self.node.counters) if links \
            else None
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def open(cls, listen: Addr, make_node: Callable[[Addr, int], PeerNode], links: bool = True) -> "UdpDriver":
        """Bind `listen` (a host name is resolved; an address in use raises OSError)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(listen[0], listen[1], type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(errno.EADDRNOTAVAIL, f"cannot resolve {listen[0]}")
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.bind(address)
            widen_socket_buffers(sock)
            return cls(sock, make_node, links)
        except BaseException:
            sock.close()
            raise

    def now_ms(self) -> int:
        return int(self._loop.time() * 1000)

    # -- the socket --

    def _on_readable(self) -> None:
        if self._read_queued():
            self._pump()

    def _read_queued(self) -> bool:
        """Hand the node what the socket holds (at most a turn's worth); True if any of it
        asked for output."""
        wants_pump = False
        for _ in range(READS_PER_TURN_MAX):
            try:
                data, addr = self._sock.recvfrom(DATAGRAM_READ_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # an ICMP error queued on the socket: the transactions notice the silence
                log.debug("socket error: %s", e)
                continue
            wants_pump |= self._deliver(data, (addr[0], addr[1]))
        return wants_pump

    def _deliver(self, data: bytes, addr: Addr) -> bool:
        node, links, now_ms = self.node, self.links, self.now_ms()
        if links is None:
            return node.receive_datagram(data, addr, now_ms=now_ms)
        if data[:1] == PLAIN:
            return node.receive_plain(data[1:], addr, now_ms=now_ms)
        node_id, carried = links.receive(data, addr, now_ms=now_ms)
        wants_pump = bool(links.datagrams_waiting)
        for datagram in carried:
            wants_pump |= node.receive_datagram(datagram, addr, now_ms=now_ms, link_id=node_id)
        return wants_pump

    # -- the node's outputs --

    def _pump(self) -> None:
        node, links = self.node, self.links
        if links is None:
            for data, addr in node.datagrams_to_send():
                self._send(self._sock, data, addr)
            for data, addr in node.datagrams_from_other_port():
                self._send(self._other_port(), data, addr)
        else:
            now_ms = self.now_ms()
            for data, addr in node.datagrams_to_send():
                links.send(data, addr, now_ms=now_ms)
            for data, addr in links.datagrams_to_send():
                self._send(self._sock, data, addr)
            for data, addr in node.datagrams_from_other_port():
                self._send(self._other_port(), PLAIN + data, addr)
        for event in node.events():
            self._on_event(event)
        deadline = node.next_deadline_ms()
        if links is not None:
            shaking = links.next_deadline_ms(self.now_ms())
            deadline = shaking if deadline is None else deadline if shaking is None else min(deadline, shaking)
        self._timer.follow(deadline)

    def _send(self, sock: socket.socket, data: bytes, addr: Addr) -> None:
        try:
            sock.sendto(data, addr)
        except (OSError, ValueError) as e:  # a full buffer or an address the kernel refuses
            self.node.counters["drop.unsendable"] += 1  # must not cost the rest; UDP loses, the node resends
            log.debug("cannot send to %s: %s", addr, e)

    def _other_port(self) -> socket.socket:
        """A socket on the same address, another port, that only sends (core/reachability.py)."""
        if self._other is None:
            self._other = socket.socket(self._sock.family, socket.SOCK_DGRAM)
            self._other.setblocking(False)
            self._other.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # nothing is read from it
            self._other.bind((self._bound[0], 0))
        return self._other

    def _on_timer(self) -> None:
        self._read_queued()  # answers already here are not silence
        self.node.handle_timer(now_ms=self.now_ms())
        if self.links is not None:
            self.links.handle_timer(now_ms=self.now_ms())
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
                self.on_tunnel(event)
        elif isinstance(event, Attached):
            log.info("attached to peer %s at %s:%d", short(event.peer_id), *event.addr)
            if self.on_attached is not None:
                self.on_attached(event.peer_id)
        elif isinstance(event, NodeFailed):
            log.info("node %s failed", short(event.node_id))
            if self.on_node_failed is not None:
                self.on_node_failed()

    # -- commands --

    def begin(self, start: Callable[[PeerNode, int], int], done: Callable[[RequestCompleted], None]) -> None:
        """Start a node command that returns a handle; `done` gets its completion (always, once)."""
        try:
            handle = start(self.node, self.now_ms())
        except LocalProtocolError as e:  # not joined (between roles, say): an answer, after the caller's turn
            self._loop.call_soon(done, RequestCompleted(0, None, Error(ErrorCode.UNREACHABLE, str(e)), 0, None))
            return
        self._waiting[handle] = done
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
        self.node.join(bootstrap, now_ms=self.now_ms())
        self._pump()

    async def leave(self, timeout_s: float) -> None:
        self.node.leave(now_ms=self.now_ms())
        self._pump()
        try:
            await asyncio.wait_for(asyncio.shield(self.left), timeout_s)
        except asyncio.TimeoutError:
            log.warning("leave not acknowledged within %.1f s", timeout_s)

    async def change_role(self, make_node: Callable[[Addr, int], PeerNode], bootstrap: list[Addr],
                          timeout_s: float) -> None:
        """Become the node `make_node` makes (the same id, the other role) on the same socket: a
        peer first leaves, handing every value it holds over; the new node joins (a peer) or
        attaches (a client) through the peers the old one knew, then `bootstrap`. OverlayError
        when none takes it within `timeout_s`. The new node measures its link afresh: a client's
        is the one to its admitting peer, not the neighbours it had as a peer."""
        old = self.node
        known = old.known_peers()
        if not old.config.client:
            await self.leave(timeout_s)
        self._fail_waiting("the node changed its role")
        self.node = make_node(self._bound, self.now_ms())
        self.node.counters_beside = old.counters_beside
        if self.links is not None:
            self.links.counters = self.node.counters
            if self.node.me.addr != old.me.addr:
                self.links.reset()
        self.joined, self.left = self._loop.create_future(), self._loop.create_future()
        self.join(list(dict.fromkeys(known + bootstrap)))
        try:
            await asyncio.wait_for(asyncio.shield(self.joined), timeout_s)
        except asyncio.TimeoutError:
            raise OverlayError(f"no peer took the new role within {timeout_s:.0f} s") from None

    def close(self) -> None:
        """Stop reading and close the socket; commands still waiting fail."""
        if self._sock.fileno() < 0:
            return
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._other is not None:
            self._other.close()
        self._timer.cancel()
        self._fail_waiting("driver closed")

    def _fail_waiting(self, reason: str) -> None:
        waiting, self._waiting = self._waiting, {}
        for handle, done in waiting.items():
            done(RequestCompleted(handle, None, Error(0, reason), 0, None))


def system_node_factory(config: PeerConfig, identity: Identity,
                        advertise_host: str | None = None) -> Callable[[Addr, int], PeerNode]:
    """Wire the node of `identity` to the operating system's randomness once its socket is
    bound; other nodes reach it at `advertise_host` (default: the bound host) and the bound port."""

    def make(bound: Addr, now_ms: int) -> PeerNode:
        return make_peer(identity, (advertise_host or bound[0], bound[1]), config, rng=random.Random(os.urandom(16)),
                         entropy=os.urandom, now_ms=now_ms, wall_offset_ms=time.time_ns() // 1_000_000 - now_ms)

    return make
