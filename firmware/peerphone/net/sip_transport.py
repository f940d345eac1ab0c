"""The SIP front's transport: UDP and TCP on one port, the loop's clock, one timer.

Like the peer's UDP driver it owns no protocol logic: bytes and time go into the
`SipFront`; messages to send, overlay requests, one deadline and events come out.
Overlay requests are started on the peer's node through its `UdpDriver`, and their
completions go back into the front. TCP carries SIP as a stream (RFC 3261 §18.3):
`StreamFramer` cuts it into messages by Content-Length; a connection silent for
longer than a registration lives is closed; connections are bounded, and one that
cannot be opened fails its branch at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from functools import partial
from typing import Any, Callable

from ..core.events import RequestCompleted
from ..core.limits import SIP_TCP_CONNECTIONS_MAX
from ..sip.front import FrontConfig, Link, SipFront
from ..sip.message import BODY_BYTES_MAX, MESSAGE_BYTES_MAX
from .loop import DeadlineTimer, widen_socket_buffers
from .udp import UdpDriver

log = logging.getLogger("peerphone.sip")

TCP_CONNECTIONS_MAX = SIP_TCP_CONNECTIONS_MAX
TCP_IDLE_TIMEOUT_S = 3600 + 60  # a TCP phone refreshes its registration within this
# A connection that has not yet carried one whole SIP message is closed sooner, and is the
# first to go when the table is full: holding idle connections locks nobody out.
TCP_SILENT_TIMEOUT_S = 10.0
TCP_CONNECTIONS_PER_HOST_MAX = 32
TCP_CONNECT_TIMEOUT_S = 4.0
PORT_ATTEMPTS = 20  # port 0: tries to find one free for both UDP and TCP


class FramingError(Exception):
    """The stream is not SIP we can frame: the connection is closed."""


class StreamFramer:
    """SIP messages out of a byte stream (§18.3): headers to the blank line, then
    Content-Length bytes of body. CRLF keepalives between messages (RFC 5626 §3.5.1)
    are skipped. Bounded: a head or body beyond the parser's limits is an error."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while True:
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MESSAGE_BYTES_MAX:
                    raise FramingError("header block too long")
                return messages
            head = bytes(self._buffer[:end + 4])
            length = _content_length(head)
            if length is None or length > BODY_BYTES_MAX:
                raise FramingError("bad Content-Length")
            if len(self._buffer) < len(head) + length:
                return messages
            messages.append(bytes(self._buffer[:len(head) + length]))
            del self._buffer[:len(head) + length]


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            value = value.strip()
            return int(value) if value.isdigit() and len(value) <= 6 else None
    return 0


class _Stream(asyncio.Protocol):
    """One TCP connection, accepted or opened by us."""

    def __init__(self, owner: "SipTransport", addr: tuple[str, int] | None = None) -> None:
        self.owner = owner
        self.addr = addr
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer()
        self.idle: asyncio.TimerHandle | None = None
        self.spoke = False  # a whole SIP message came (or we opened it to send one)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.addr = (peer[0], peer[1])
        if not self.owner.adopt(self):
            transport.close()
            return
        self._touch()

    def data_received(self, data: bytes) -> None:
        self._touch()
        try:
            messages = self.framer.feed(data)
        except FramingError as e:
            self.owner.front.counters[f"sip dropped: bad stream framing ({e})"] += 1
            assert self.transport is not None
            self.transport.close()
            return
        if messages and not self.spoke:
            self.spoke = True
            self._touch()
        for message in messages:
            assert self.addr is not None
            self.owner.received(message, Link("TCP", self.addr))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.owner.forget(self)

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        assert self.transport is not None
        timeout_s = TCP_IDLE_TIMEOUT_S if self.spoke else TCP_SILENT_TIMEOUT_S
        self.idle = asyncio.get_running_loop().call_later(timeout_s, self.transport.close)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class SipTransport(asyncio.DatagramProtocol):
    def __init__(self, overlay: UdpDriver, spawn: Callable[[Any], Any]) -> None:
        self.overlay = overlay
        self._spawn = spawn
        self._loop = asyncio.get_running_loop()
        self.front: SipFront = None  # type: ignore[assignment]  # made once the port is bound
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.AbstractServer | None = None
        self._streams: dict[tuple[str, int], _Stream] = {}
        self._connecting: dict[tuple[str, int], list[bytes]] = {}
        self._timer = DeadlineTimer(self._loop, self._on_timer)
        self.on_sent: Callable[[], None] | None = None  # the front sent something (a handset beside it polls)

    @classmethod
    async def open(cls, host: str, port: int, config: FrontConfig, overlay: UdpDriver,
                   spawn: Callable[[Any], Any]) -> "SipTransport":
        """UDP and TCP on the same port (port 0 picks one free for both); the front behind them."""
        loop = asyncio.get_running_loop()
        for _ in range(PORT_ATTEMPTS):
            transport, sip = await loop.create_datagram_endpoint(lambda: cls(overlay, spawn), local_addr=(host, port))
            bound = transport.get_extra_info("sockname")[1]
            try:
                sip._tcp_server = await loop.create_server(lambda: _Stream(sip), host, bound)
            except OSError:
                transport.close()
                if port:
                    raise
                continue
            sip._udp = transport
            widen_socket_buffers(transport.get_extra_info("socket"))
            config.port = bound
            now_ms = sip.now_ms()
            sip.front = SipFront(config, entropy=os.urandom, now_ms=now_ms,
                                  wall_offset_ms=time.time_ns() // 1_000_000 - now_ms)
            overlay.on_tunnel = sip._tunnelled
            overlay.on_node_failed = sip._node_failed
            overlay.on_attached = sip.reached_through
            sip._pump()
            return sip
        raise OSError("no port free for both UDP and TCP")

    @property
    def port(self) -> int:
        return self.front.config.port

    def now_ms(self) -> int:
        return self.overlay.now_ms()  # one clock for the peer and its front

    def close(self) -> None:
        self.front.close()
        self._timer.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for stream in list(self._streams.values()):
            if stream.transport is not None:
                stream.transport.close()

    # -- into the front --

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received(data, Link("UDP", (addr[0], addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("sip: socket error %s", exc)

    def received(self, data: bytes, link: Link) -> None:
        self.front.receive(data, link, now_ms=self.now_ms())
        self._pump()

    def _tunnelled(self, origin: int, payload: bytes) -> None:
        self.front.receive_tunnelled(origin, payload, now_ms=self.now_ms())
        self._pump()

    def reached_through(self, peer_id: int | None) -> None:
        """Our node's admitting peer now (None: it is a peer): see SipFront.reached_through."""
        self.front.reached_through(peer_id, now_ms=self.now_ms())
        self._pump()

    def moved(self, host: str) -> None:
        """The device's new address: see SipFront.moved."""
        self.front.moved(host, now_ms=self.now_ms())
        self._pump()

    def _node_failed(self) -> None:
        self.front.overlay_changed(now_ms=self.now_ms())
        self._pump()

    def _overlay_done(self, handle: int, done: RequestCompleted) -> None:
        self.front.overlay_completed(handle, done, now_ms=self.now_ms())
        self._pump()

    def _on_timer(self) -> None:
        self.front.handle_timer(now_ms=self.now_ms())
        self._pump()

    # -- out of the front --

    def _pump(self) -> None:
        front = self.front
        sent = False
        for data, link in front.messages_to_send():
            self._send(data, link)
            sent = True
        if sent and self.on_sent is not None:
            self.on_sent()
        for request in front.overlay_requests():
            self.overlay.begin(request.start, partial(self._overlay_done, request.handle))
        for event in front.events():
            log.debug("sip: %s", event)
        self._timer.follow(front.next_deadline_ms())

    def _send(self, data: bytes, link: Link) -> None:
        if link.transport == "UDP":
            if self._udp is not None:
                self._udp.sendto(data, link.addr)
            return
        stream = self._streams.get(link.addr)
        if stream is not None:
            stream.write(data)
        elif link.addr in self._connecting:
            self._connecting[link.addr].append(data)
        elif len(self._streams) + len(self._connecting) >= TCP_CONNECTIONS_MAX:
            self.front.counters["sip dropped: too many TCP connections"] += 1
            self._loop.call_soon(self._failed, link)
        else:
            self._connecting[link.addr] = [data]
            self._spawn(self._connect(link))

    async def _connect(self, link: Link) -> None:
        try:
            await asyncio.wait_for(self._loop.create_connection(lambda: _Stream(self), *link.addr),
                                   TCP_CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as e:
            log.info("sip: cannot connect to %s:%d over TCP: %s", link.addr[0], link.addr[1], e)
            self._connecting.pop(link.addr, None)
            self._failed(link)

    def _failed(self, link: Link) -> None:
        self.front.transport_failed(link, now_ms=self.now_ms())
        self._pump()

    # -- TCP connections --

    def adopt(self, stream: _Stream) -> bool:
        """A connection is up (accepted, or opened by us): send what waited for it."""
        assert stream.addr is not None
        queued = self._connecting.pop(stream.addr, None)
        if queued is not None:
            stream.spoke = True
        elif sum(1 for addr in self._streams if addr[0] == stream.addr[0]) >= TCP_CONNECTIONS_PER_HOST_MAX:
            self.front.counters["sip dropped: too many TCP connections from one host"] += 1
            return False
        elif len(self._streams) >= TCP_CONNECTIONS_MAX:
            silent = next((s for s in self._streams.values() if not s.spoke), None)
            if silent is None:
                self.front.counters["sip dropped: too many TCP connections"] += 1
                return False
            self.front.counters["sip closed: a silent TCP connection, for a new one"] += 1
            self.forget(silent)
            if silent.transport is not None:
                silent.transport.close()
        self._streams[stream.addr] = stream
        for data in queued or ():
            stream.write(data)
        return True

    def forget(self, stream: _Stream) -> None:
        if stream.addr is not None and self._streams.get(stream.addr) is stream:
            del self._streams[stream.addr]
