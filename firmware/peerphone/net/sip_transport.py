"""The SIP front's transport: UDP and TCP on one port, TLS on another, the loop's clock, one timer.

Like the peer's UDP driver it owns no protocol logic: bytes and time go into the
`SipFront`; messages to send, overlay requests, one deadline and events come out.
Overlay requests are started on the peer's node through its `UdpDriver`, and their
completions go back into the front. TCP carries SIP as a stream (RFC 3261 §18.3):
`StreamFramer` cuts it into messages by Content-Length; a connection silent for
longer than a registration lives is closed; connections are bounded, and one that
cannot be opened fails its branch at once. TLS is the same stream inside a `TlsSession`
(tls.py): a connection to another front must show that front's node.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from functools import partial
from typing import Any, Callable

from ..core.events import RequestCompleted, Tunnelled
from ..core.ingress import TokenBuckets
from ..core.limits import SIP_TCP_CONNECTIONS_MAX
from ..sip.front import FrontConfig, Link, SipFront
from ..sip.message import BODY_BYTES_MAX, MESSAGE_BYTES_MAX
from .loop import DeadlineTimer, widen_socket_buffers
from .tls import TlsRefused, TlsSession, TlsWrongNode, contexts
from .udp import UdpDriver

log = logging.getLogger("peerphone.sip")

TCP_CONNECTIONS_MAX = SIP_TCP_CONNECTIONS_MAX
TCP_IDLE_TIMEOUT_S = 3600 + 60  # a TCP phone refreshes its registration within this
# A connection that has not yet carried one whole SIP message is closed sooner, and is the
# first to go when the table is full: holding idle connections locks nobody out.
TCP_SILENT_TIMEOUT_S = 10.0
TCP_CONNECTIONS_PER_HOST_MAX = 32
TCP_CONNECT_TIMEOUT_S = 4.0
# A TLS handshake costs the front about a millisecond of CPU: new TLS connections from one
# host beyond this rate are closed before it (a phone makes one, and keeps it).
TLS_ACCEPTS_PER_HOST_PER_S = 10
TLS_ACCEPTS_BURST = 20
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
    """One TCP connection, accepted or opened by us; `tls` when it carries TLS."""

    def __init__(self, owner: "SipTransport", tls: TlsSession | None = None) -> None:
        self.owner = owner
        self.tls = tls
        self.name = "TLS" if tls is not None else "TCP"
        self.addr: tuple[str, int] | None = None
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer()
        self.idle: asyncio.TimerHandle | None = None
        self.spoke = False  # a whole SIP message came (or we opened it to send one)
        self.opened_for: Link | None = None  # we opened it, to send on this link

    @property
    def key(self) -> tuple[str, tuple[str, int]]:
        assert self.addr is not None
        return self.name, self.addr

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.addr = (peer[0], peer[1])
        if not self.owner.adopt(self):
            transport.close()
            return
        self._touch()
        self._flush()

    def data_received(self, data: bytes) -> None:
        self._touch()
        try:
            if self.tls is not None:
                shaking = not self.tls.established
                data = self.tls.receive(data)
                self._flush()
                if shaking and self.tls.established:
                    self.owner.front.counters["sip.tls_sessions"] += 1
            messages = self.framer.feed(data)
        except TlsWrongNode as e:
            self._close_failed(e, "refused.sip_tls_node")
            return
        except (FramingError, TlsRefused) as e:
            self._close_failed(e, f"sip dropped: bad {self.name} stream")
            return
        if messages and not self.spoke:
            self.spoke = True
            self._touch()
        proven = self.tls.node_id if self.tls is not None and self.tls.node_id is not None else 0
        for message in messages:
            assert self.addr is not None
            self.owner.received(message, Link(self.name, self.addr, proven))

    def _close_failed(self, e: Exception, counter: str) -> None:
        self.owner.front.counters[counter] += 1
        log.info("sip: %s connection with %s closed: %s", self.name, self.addr, e)
        assert self.transport is not None
        self.transport.close()
        if self.tls is not None and not self.tls.established and self.opened_for is not None:
            self.owner.failed(self.opened_for)  # its requests fail now, not at their timeout

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
        if self.tls is None:
            self.transport.write(data)
            return
        try:
            self.tls.send(data)
        except TlsRefused as e:
            self._close_failed(e, "sip dropped: bad TLS stream")
            return
        self._flush()

    def _flush(self) -> None:
        if self.tls is not None and self.transport is not None:
            records = self.tls.to_send()
            if records:
                self.transport.write(records)


class SipTransport(asyncio.DatagramProtocol):
    def __init__(self, overlay: UdpDriver, spawn: Callable[[Any], Any]) -> None:
        self.overlay = overlay
        self._spawn = spawn
        self._loop = asyncio.get_running_loop()
        self.front: SipFront = None  # type: ignore[assignment]  # made once the port is bound
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.AbstractServer | None = None
        self._tls_server: asyncio.AbstractServer | None = None
        self._tls_contexts = contexts(overlay.node.identity)
        self._tls_accepts = TokenBuckets[str](TLS_ACCEPTS_PER_HOST_PER_S, TLS_ACCEPTS_BURST, TCP_CONNECTIONS_MAX)
        self._streams: dict[tuple[str, tuple[str, int]], _Stream] = {}  # by transport and far address
        self._connecting: dict[tuple[str, tuple[str, int]], list[bytes]] = {}
        self._timer = DeadlineTimer(self._loop, self._on_timer)
        self.on_sent: Callable[[], None] | None = None  # the front sent something (a handset beside it polls)

    @classmethod
    async def open(cls, host: str, port: int, config: FrontConfig, overlay: UdpDriver,
                   spawn: Callable[[Any], Any], tls_port: int | None = 0) -> "SipTransport":
        """UDP and TCP on the same port (port 0 picks one free for both), TLS on `tls_port`
        (0 picks one; None: no TLS); the front behind them."""
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
            if tls_port is not None:
                try:
                    sip._tls_server = await loop.create_server(lambda: _Stream(sip, sip._tls(server=True)), host,
                                                               tls_port)
                except OSError:
                    sip.close_sockets()
                    raise
                config.tls_port = sip._tls_server.sockets[0].getsockname()[1]
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

    @property
    def tls_port(self) -> int:
        return self.front.config.tls_port

    def close(self) -> None:
        self.front.close()
        self._timer.cancel()
        self.close_sockets()

    def close_sockets(self) -> None:
        if self._udp is not None:
            self._udp.close()
        for server in (self._tcp_server, self._tls_server):
            if server is not None:
                server.close()
        for stream in list(self._streams.values()):
            if stream.transport is not None:
                stream.transport.close()

    def _tls(self, *, server: bool, expect: int = 0) -> TlsSession:
        context = self._tls_contexts[0 if server else 1]
        return TlsSession(context, server=server, admit=self.overlay.node.admits, expect=expect)

    # -- into the front --

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received(data, Link("UDP", (addr[0], addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("sip: socket error %s", exc)

    def received(self, data: bytes, link: Link) -> None:
        self.front.receive(data, link, now_ms=self.now_ms())
        self._pump()

    def _tunnelled(self, event: Tunnelled) -> None:
        self.front.receive_tunnelled(event.origin, event.payload, via=event.via, now_ms=self.now_ms())
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
        key = (link.transport, link.addr)
        stream = self._streams.get(key)
        if stream is not None:
            stream.write(data)
        elif key in self._connecting:
            self._connecting[key].append(data)
        elif len(self._streams) + len(self._connecting) >= TCP_CONNECTIONS_MAX:
            self.front.counters["sip dropped: too many TCP connections"] += 1
            self._loop.call_soon(self.failed, link)
        else:
            self._connecting[key] = [data]
            self._spawn(self._connect(link))

    async def _connect(self, link: Link) -> None:
        def opened() -> _Stream:
            tls = self._tls(server=False, expect=link.node_id) if link.transport == "TLS" else None
            stream = _Stream(self, tls)
            stream.opened_for = link
            return stream

        try:
            await asyncio.wait_for(self._loop.create_connection(opened, *link.addr), TCP_CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as e:
            log.info("sip: cannot connect to %s:%d over %s: %s", link.addr[0], link.addr[1], link.transport, e)
            self._connecting.pop((link.transport, link.addr), None)
            self.failed(link)

    def failed(self, link: Link) -> None:
        self.front.transport_failed(link, now_ms=self.now_ms())
        self._pump()

    # -- TCP connections --

    def adopt(self, stream: _Stream) -> bool:
        """A connection is up (accepted, or opened by us): send what waited for it."""
        assert stream.addr is not None
        queued = self._connecting.pop(stream.key, None) if stream.opened_for is not None else None
        if queued is not None:
            stream.spoke = True
        elif stream.tls is not None and not self._tls_accepts.allow(stream.addr[0], now_ms=self.now_ms()):
            self.front.counters["sip dropped: TLS connections from one host past the rate"] += 1
            return False
        elif sum(1 for _, addr in self._streams if addr[0] == stream.addr[0]) >= TCP_CONNECTIONS_PER_HOST_MAX:
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
        self._streams[stream.key] = stream
        for data in queued or ():
            stream.write(data)
        return True

    def forget(self, stream: _Stream) -> None:
        if stream.addr is not None and self._streams.get(stream.key) is stream:
            del self._streams[stream.key]
