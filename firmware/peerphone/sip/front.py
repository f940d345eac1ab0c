"""The SIP front of a peer: a registrar and proxy (RFC 3261 §10, §16) for any SIP phone.

The overlay is the location service. REGISTER stores AOR -> contact (and this
front's address and node id) in the overlay as a SIP registration; a request for
an AOR of the overlay's domain is sent to the contact when the UA registered
here, else to the front that serves it, found by an overlay fetch. That front
hands it to its UA. A front whose callee cannot be reached says 480; a MESSAGE
for an AOR that is not online is kept in the overlay and delivered when the AOR
registers (seed 000). Requests for other domains go to the gateway configured for
them (seed 002, §3.4), and requests from there for overlay AORs are served alike.

The proxy is transaction-stateful enough for a phone system: 100 Trying to every
INVITE, CANCEL matched to its INVITE, one timer per forwarded request (480 when
the next hop never answers, 408 when a final answer never comes), absorption of
the ACK to a final response it made itself. Every datagram is parsed by the
bounded parser; a request that does not parse is dropped, one that parses but
misses a mandatory header is answered 400, and nothing else changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, Protocol

from ..core.ids import id_from_name
from ..core.limits import LIFETIME_S_MAX, TUNNEL_BYTES_MAX
from ..core.usages import MODEL_OF, Kind, OfflineMessage, RecordError, Registration
from ..core.wire.messages import ARRAY_APPEND, Addr, DataModel, Entry, FetchAns
from .message import (
    BODY_BYTES_MAX,
    MESSAGE_BYTES_MAX,
    SipParseError,
    SipRequest,
    SipResponse,
    canonical,
    check_request,
    parse,
)
from .uri import NameAddr, Uri, Via

log = logging.getLogger("peerphone.sip")

EXPIRES_DEFAULT_S = 3600
EXPIRES_MAX_S = 3600
CONTACTS_PER_AOR_MAX = 8
BINDINGS_MAX = 10_000
TRANSACTIONS_MAX = 4096
RESOLVING_MAX = 1024  # requests waiting for an overlay fetch or store at once
TCP_CONNECTIONS_MAX = 256
TCP_IDLE_TIMEOUT_S = EXPIRES_MAX_S + 60  # a TCP phone refreshes its registration within this
GATEWAY_LIFETIME_S = 180
TUNNEL_HEADER_BYTES = 10  # message id (8), part index, part count
TUNNEL_PARTS_MAX = -(-MESSAGE_BYTES_MAX // (TUNNEL_BYTES_MAX - TUNNEL_HEADER_BYTES))
TUNNEL_REASSEMBLIES_MAX = 64
TUNNEL_PARAM = "pp-node"  # on our Record-Route when we are reached through the overlay: our node id
OFFLINE_LIFETIME_S = min(LIFETIME_S_MAX, 7 * 24 * 3600)
T1_S = 0.5
TRANSACTION_TIMEOUT_S = 32.0   # 64*T1: non-INVITE final answer, and how long a finished one is remembered
INVITE_FINAL_TIMEOUT_S = 180.0  # Timer C (§16.6 step 11)
MAGIC = "z9hG4bK"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, REGISTER, INFO, UPDATE, REFER, PRACK"
DIALOG_CREATING = ("INVITE", "SUBSCRIBE", "REFER")
REASONS = {100: "Trying", 200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found",
           408: "Request Timeout", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
           482: "Loop Detected", 483: "Too Many Hops", 500: "Server Internal Error", 503: "Service Unavailable"}


class OverlayAccess(Protocol):
    """What the front needs of its peer (net.udp.UdpDriver provides it; Tunnel requests that
    arrive for us are handed to `SipFront.receive_tunnelled` by whoever wires the two)."""

    async def store(self, resource: int, kind: int, model: DataModel, entries: list[Entry]) -> Any: ...

    async def fetch(self, resource: int, kind: int) -> FetchAns: ...

    async def tunnel(self, node_id: int, payload: bytes) -> None: ...


@dataclass(frozen=True)
class Link:
    """Where a message goes or came from: a transport and the far end's address."""

    transport: str  # "UDP", "TCP", or "TUNNEL": through the overlay to `node_id`
    addr: Addr
    node_id: int = 0

    @property
    def via_transport(self) -> str:
        return "TCP" if self.transport == "TCP" else "UDP"


@dataclass
class FrontConfig:
    domain: str
    node_id: int
    advertise_host: str
    reach_timeout_s: float = 4.0  # no answer at all from the next hop within this: 480
    reachable: bool = True  # False: other fronts send to us through the overlay (we are behind NAT)
    gateways: dict[str, Addr] = field(default_factory=dict)  # foreign domain -> its proxy


@dataclass
class _Binding:
    contact: str
    link: Link
    expires_at: float


@dataclass
class _Reassembly:
    count: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)


@dataclass
class _Transaction:
    """One request we forwarded (or sent ourselves: `upstream` None)."""

    request: SipRequest
    upstream: Link | None
    downstream: Link
    branch: str
    sent: bytes  # the request as we sent it downstream, repeated on retransmissions over UDP
    answered: bool = False
    final: bytes | None = None  # the final response we sent upstream (b"": being made), repeated likewise
    made_final: bool = False    # that final response was ours, not the next hop's
    timer: asyncio.TimerHandle | None = None
    on_final: Callable[[SipResponse], None] | None = None


class SipFront:
    def __init__(self, config: FrontConfig, overlay: OverlayAccess,
                 spawn: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self.config = config
        self.overlay = overlay
        self._spawn = spawn
        self._loop = asyncio.get_running_loop()
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.base_events.Server | None = None
        self._tcp: dict[Addr, asyncio.StreamWriter] = {}
        self._bindings: dict[str, dict[str, _Binding]] = {}
        self._by_branch: dict[tuple[str, str], _Transaction] = {}    # (our branch, method)
        self._by_upstream: dict[tuple[str, str], _Transaction] = {}  # (their branch, method)
        self._my_hosts = {config.advertise_host.lower(), "127.0.0.1", "localhost"}
        self._parts: dict[tuple[int, bytes], _Reassembly] = {}  # tunnelled messages still in pieces
        self._resolving: set[tuple[str, str]] = set()  # (their branch, method) waiting for the overlay
        self.counters: Counter[str] = Counter()

    # ------------------------------------------------------------------ transports

    async def start(self, host: str, port: int) -> None:
        """UDP and TCP on the same port; port 0 picks one free for both."""
        for _ in range(20):
            transport, _proto = await self._loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port))
            bound = transport.get_extra_info("sockname")[1]
            try:
                self._tcp_server = await asyncio.start_server(self._accept, host, bound, limit=MESSAGE_BYTES_MAX)
            except OSError:
                transport.close()
                if port:
                    raise
                continue
            self._udp, self.port = transport, bound
            if self.config.gateways:
                self._spawn(self._advertise_gateways())
            return
        raise OSError("no port free for both UDP and TCP")

    def close(self) -> None:
        if self.counters:
            log.info("sip front counters: %s", ", ".join(f"{k} {v}" for k, v in sorted(self.counters.items())))
        for t in self._by_branch.values():
            if t.timer is not None:
                t.timer.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for writer in self._tcp.values():
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr = (peer[0], peer[1])
        if len(self._tcp) >= TCP_CONNECTIONS_MAX:
            writer.close()
            return
        self._tcp[addr] = writer
        await self._read_stream(reader, writer, addr)

    async def _read_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, addr: Addr) -> None:
        link = Link("TCP", addr)
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TCP_IDLE_TIMEOUT_S)
                head = head.lstrip(b"\r\n")  # keepalive CRLFs (RFC 5626 §3.5.1)
                if not head:
                    continue
                length = _content_length(head)
                if length is None or length > BODY_BYTES_MAX:
                    self.counters["sip dropped: bad stream framing"] += 1
                    break
                body = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_TIMEOUT_S)
                self.receive(head + body, link)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.TimeoutError):
            pass  # closed, oversized, or silent for longer than a registration lives
        finally:
            if self._tcp.get(addr) is writer:
                del self._tcp[addr]
            writer.close()

    def _send(self, data: bytes, link: Link) -> None:
        if link.transport == "TUNNEL":
            self._tunnel(data, link.node_id)
        elif link.transport == "TCP":
            writer = self._tcp.get(link.addr)
            if writer is None and len(self._tcp) >= TCP_CONNECTIONS_MAX:
                self.counters["sip dropped: too many TCP connections"] += 1
            elif writer is None:
                self._spawn(self._connect_and_send(data, link.addr))
            else:
                writer.write(data)
        elif self._udp is not None:
            self._udp.sendto(data, link.addr)

    async def _connect_and_send(self, data: bytes, addr: Addr) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr, limit=MESSAGE_BYTES_MAX),
                                                    self.config.reach_timeout_s)
        except (OSError, asyncio.TimeoutError) as e:
            log.info("sip: cannot connect to %s:%d over TCP: %s", addr[0], addr[1], e)
            return
        self._tcp[addr] = writer
        writer.write(data)
        await self._read_stream(reader, writer, addr)

    # ------------------------------------------------------------------ the Tunnel path

    def _tunnel(self, data: bytes, node_id: int) -> None:
        """Cut a SIP message into Tunnel-sized parts: message id, index, count, bytes."""
        message_id = os.urandom(8)
        size = TUNNEL_BYTES_MAX - TUNNEL_HEADER_BYTES
        parts = [data[i:i + size] for i in range(0, len(data), size)]
        self.counters["sip tunnelled out"] += 1
        for index, part in enumerate(parts):
            self._spawn(self._tunnel_part(node_id, message_id + bytes((index, len(parts))) + part))

    async def _tunnel_part(self, node_id: int, payload: bytes) -> None:
        try:
            await self.overlay.tunnel(node_id, payload)
        except Exception as e:  # the transaction's timer answers upstream
            log.info("sip: tunnel to %x failed: %s", node_id, e)

    def receive_tunnelled(self, origin: int, payload: bytes) -> None:
        """One part of a SIP message carried through the overlay; the message once all have come."""
        if len(payload) < TUNNEL_HEADER_BYTES:
            self.counters["sip dropped: bad tunnel part"] += 1
            return
        message_id, index, count = payload[:8], payload[8], payload[9]
        if not index < count <= TUNNEL_PARTS_MAX:
            self.counters["sip dropped: bad tunnel part"] += 1
            return
        now = time.monotonic()
        for key in [k for k, r in self._parts.items() if r.started < now - TRANSACTION_TIMEOUT_S]:
            del self._parts[key]
        key = (origin, message_id)
        held = self._parts.get(key)
        if held is None:
            if len(self._parts) >= TUNNEL_REASSEMBLIES_MAX:
                self.counters["sip dropped: too many tunnelled messages"] += 1
                return
            held = self._parts[key] = _Reassembly(count, now)
        if held.count != count:
            return
        held.parts[index] = payload[TUNNEL_HEADER_BYTES:]
        if len(held.parts) == count:
            del self._parts[key]
            self.counters["sip tunnelled in"] += 1
            self.receive(b"".join(held.parts[i] for i in range(count)), Link("TUNNEL", ("", 0), origin))

    # ------------------------------------------------------------------ ingress

    def receive(self, data: bytes, link: Link) -> None:
        """One message from the network. Nothing raised here leaves the front."""
        if not data.strip(b"\r\n"):
            return  # keepalive
        try:
            message = parse(data)
        except SipParseError as e:
            self.counters["sip dropped: unparseable"] += 1
            log.debug("sip: dropped from %s: %s", link.addr, e.reason)
            return
        try:
            if isinstance(message, SipResponse):
                self._on_response(message)
            else:
                self._on_request(message, link)
        except SipParseError as e:
            self.counters["sip answered 400"] += 1
            if isinstance(message, SipRequest) and message.method != "ACK":
                self._respond(message, link, e.status, e.reason)
        except Exception:  # a bug must not stop the front serving everybody else
            self.counters["sip internal errors"] += 1
            log.exception("sip: error handling a message from %s", link.addr)

    def _on_request(self, req: SipRequest, link: Link) -> None:
        if not req.get_all("via"):
            raise SipParseError("missing via header")
        if link.transport != "TUNNEL":
            self._note_source(req, link)
        check_request(req)
        self.counters[f"sip {req.method}"] += 1
        theirs = _their_branch(req)
        again = self._by_upstream.get((theirs, req.method))
        if again is not None and req.method != "ACK":
            self._retransmitted(again)
            return
        if req.method == "ACK":
            invite = self._by_upstream.get((theirs, "INVITE"))
            if invite is not None and invite.made_final:
                return  # the ACK to our own final answer ends the transaction here
            if invite is not None:
                self._forward(req, link, invite.downstream, branch=invite.branch)
                return
        if req.method == "CANCEL":
            self._cancel(req, link, self._by_upstream.get((theirs, "INVITE")))
            return
        routes = req.get_all("route")
        if routes and self._is_me(NameAddr.parse(routes[0]).uri):
            _drop_first(req, "route")
            routes = routes[1:]
        if routes:
            self._forward(req, link, self._link_to(NameAddr.parse(routes[0]).uri))
            return
        uri = Uri.parse(req.uri)
        if self._is_me(uri) and uri.user is None:
            self._to_me(req, link)
            return
        if req.method == "REGISTER":
            self._serve(req, link, self._register(req, link, uri))
            return
        if uri.host == self.config.domain or (self._is_me(uri) and uri.user):
            if req.method == "INVITE":
                self._respond(req, link, 100)
            self._serve(req, link, self._to_aor(req, link, f"sip:{uri.user}@{self.config.domain}"))
            return
        if _is_address(uri.host):
            self._forward(req, link, self._link_to(uri))  # in-dialog, straight to a contact
            return
        if req.method == "INVITE":
            self._respond(req, link, 100)
        gateway = self.config.gateways.get(uri.host)
        if gateway is not None:
            self._forward(req, link, Link("UDP", gateway))
        else:
            self._serve(req, link, self._to_gateway(req, link, uri.host))

    def _serve(self, req: SipRequest, link: Link, work: Coroutine[Any, Any, None]) -> None:
        """Run the part of handling a request that waits for the overlay, with receive()'s guarantees.
        A retransmission that arrives meanwhile is dropped: the first copy is being served."""
        key = (_their_branch(req), req.method)
        if key in self._resolving:
            work.close()
            self.counters["sip retransmissions absorbed"] += 1
            return
        if len(self._resolving) >= RESOLVING_MAX:  # a flood must not make tasks without end
            work.close()
            if req.method != "ACK":
                self._respond(req, link, 503, "Service Unavailable (busy)")
            return
        self._resolving.add(key)

        async def guarded() -> None:
            try:
                await work
            except SipParseError as e:
                self.counters["sip answered 400"] += 1
                if req.method != "ACK":
                    self._respond(req, link, e.status, e.reason)
            except Exception:
                self.counters["sip internal errors"] += 1
                log.exception("sip: error serving %s from %s", req.method, link.addr)
                if req.method != "ACK":
                    self._respond(req, link, 500)
            finally:
                self._resolving.discard(key)

        self._spawn(guarded())

    def _to_me(self, req: SipRequest, link: Link) -> None:
        if req.method == "OPTIONS":
            self._respond(req, link, 200, extra=[("Allow", ALLOW), ("Accept", "application/sdp")])
        elif req.method == "REGISTER":
            self._serve(req, link, self._register(req, link, Uri.parse(req.uri)))
        elif req.method != "ACK":
            self._respond(req, link, 404)

    def _note_source(self, req: SipRequest, link: Link) -> None:
        """received and rport on the top Via (§18.2.1, RFC 3581): answers go where it came from."""
        for i, (name, value) in enumerate(req.headers):
            if canonical(name) != "via":
                continue
            first, sep, rest = value.partition(",")
            via = Via.parse(first)
            params = [p for p in first.split(";")[1:] if p.split("=")[0].strip().lower() not in ("received", "rport")]
            extra = []
            if via.host != link.addr[0]:
                extra.append(f"received={link.addr[0]}")
            if via.param("rport") is not None:
                extra.append(f"rport={link.addr[1]}")
            sent = first.split(";")[0]
            req.headers[i] = (name, ";".join([sent, *params, *extra]) + (sep + rest if sep else ""))
            return

    # ------------------------------------------------------------------ registrar (§10.3)

    async def _register(self, req: SipRequest, link: Link, uri: Uri) -> None:
        to = NameAddr.parse(req.get("to") or "")
        if to.uri.host != self.config.domain and not self._is_me(to.uri) and not self._is_me(uri):
            self._respond(req, link, 404, "Not Found (domain not served here)")
            return
        if to.uri.user is None:
            self._respond(req, link, 400, "Bad Request (To has no user)")
            return
        aor = f"sip:{to.uri.user}@{self.config.domain}"
        contacts = req.get_all("contact")
        default_expires = _int_or(req.get("expires"), EXPIRES_DEFAULT_S)
        now = time.monotonic()
        bindings = self._bindings.get(aor, {})
        changes: list[tuple[str, int]] = []
        if contacts == ["*"]:
            if default_expires != 0:
                self._respond(req, link, 400, "Bad Request (* needs Expires: 0)")
                return
            changes = [(c, 0) for c in bindings]
        else:
            for text in contacts:
                contact = NameAddr.parse(text)
                expires = min(_int_or(contact.param("expires"), default_expires), EXPIRES_MAX_S)
                changes.append((str(contact.uri), max(0, expires)))
        if sum(1 for c, e in changes if e > 0 and c not in bindings) + len(bindings) > CONTACTS_PER_AOR_MAX:
            self._respond(req, link, 503, "Service Unavailable (too many contacts)")
            return
        if aor not in self._bindings and len(self._bindings) >= BINDINGS_MAX:
            for stale in list(self._bindings):
                self._local_binding(stale)  # drops what has expired
            if len(self._bindings) >= BINDINGS_MAX:
                self._respond(req, link, 503, "Service Unavailable (registrar full)")
                return
        entries = [Entry(_contact_key(c), Registration(c, (self.config.advertise_host, self.port),
                                                        self.config.node_id, self.config.reachable).to_bytes()
                         if e else b"",
                         time.time_ns() // 1_000_000, e) for c, e in changes]
        if entries:
            try:
                await self.overlay.store(id_from_name(aor), Kind.SIP_REGISTRATION,
                                         MODEL_OF[Kind.SIP_REGISTRATION], entries)
            except Exception as e:
                log.warning("sip: registration of %s not stored: %s", aor, e)
                self._respond(req, link, 503, "Service Unavailable (overlay did not store)")
                return
        for uri_text, expires in changes:
            if expires:
                bindings[uri_text] = _Binding(uri_text, self._path_to(Uri.parse(uri_text), link), now + expires)
            else:
                bindings.pop(uri_text, None)
        if bindings:
            self._bindings[aor] = bindings
        else:
            self._bindings.pop(aor, None)
        current = [(f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}") for b in bindings.values()]
        self._respond(req, link, 200, extra=[("Contact", c) for c in current] + [("Date", _http_date())])
        log.info("sip: %s %s", aor, "registered" if bindings else "unregistered")
        if any(e for _, e in changes):
            await self._deliver_offline(aor)

    def _path_to(self, contact: Uri, came_from: Link) -> Link:
        """How to reach a registered UA: its TCP connection, its contact, or (behind NAT, where the
        contact names an address we did not hear it from) where its REGISTER came from."""
        if came_from.transport == "TCP":
            return came_from
        if contact.host == came_from.addr[0]:
            return self._link_to(contact)
        return came_from

    def _local_binding(self, aor: str) -> _Binding | None:
        now = time.monotonic()
        bindings = self._bindings.get(aor, {})
        for contact in [c for c, b in bindings.items() if b.expires_at <= now]:
            del bindings[contact]
        if not bindings:
            self._bindings.pop(aor, None)
            return None
        return max(bindings.values(), key=lambda b: b.expires_at)

    # ------------------------------------------------------------------ location and routing (§16.5)

    async def _to_aor(self, req: SipRequest, link: Link, aor: str) -> None:
        binding = self._local_binding(aor)
        if binding is not None:
            req.uri = binding.contact
            self._forward(req, link, binding.link)
            return
        try:
            answer = await self.overlay.fetch(id_from_name(aor), Kind.SIP_REGISTRATION)
        except Exception as e:
            log.info("sip: lookup of %s failed: %s", aor, e)
            self._respond(req, link, 480, "Temporarily Unavailable (overlay lookup failed)")
            return
        records = []
        for entry in answer.entries:
            try:
                records.append((entry.storage_time_ms, Registration.from_bytes(entry.value)))
            except RecordError:
                self.counters["sip bad registration records"] += 1
        records = [r for r in records if r[1].node_id != self.config.node_id]  # ours would be bound above
        if not records:
            if req.method == "MESSAGE":
                await self._keep_offline(req, link, aor)
            elif req.method != "ACK":
                self._respond(req, link, 404, "Not Found (not registered)" if not answer.entries else
                              "Not Found (registration ended here)")
            return
        _, newest = max(records, key=lambda r: r[0])
        req.uri = aor  # the serving front knows the AOR, not our own address it may have been sent to
        self._forward(req, link, Link("UDP", newest.front) if newest.reachable else
                      Link("TUNNEL", newest.front, newest.node_id))

    async def _to_gateway(self, req: SipRequest, link: Link, domain: str) -> None:
        """A foreign domain: to a peer that gateways to it, found in the overlay (seed 002, §3.4)."""
        try:
            answer = await self.overlay.fetch(_gateway_key(domain), Kind.SIP_REGISTRATION)
        except Exception as e:
            log.info("sip: gateway lookup for %s failed: %s", domain, e)
            answer = FetchAns(None, ())
        fronts = []
        for entry in answer.entries:
            try:
                fronts.append(Registration.from_bytes(entry.value).front)
            except RecordError:
                self.counters["sip bad gateway records"] += 1
        if not fronts:
            if req.method != "ACK":
                self._respond(req, link, 404, "Not Found (no gateway to that domain)")
            return
        self._forward(req, link, Link("UDP", fronts[0]))

    async def _advertise_gateways(self) -> None:
        """Keep "this peer gateways to DOMAIN" in the overlay while it runs."""
        while True:
            now_ms = time.time_ns() // 1_000_000
            me = Registration("sip:gateway", (self.config.advertise_host, self.port), self.config.node_id)
            for domain in self.config.gateways:
                entry = Entry(self.config.node_id.to_bytes(20, "big"), me.to_bytes(), now_ms, GATEWAY_LIFETIME_S)
                try:
                    await self.overlay.store(_gateway_key(domain), Kind.SIP_REGISTRATION,
                                             MODEL_OF[Kind.SIP_REGISTRATION], [entry])
                except Exception as e:
                    log.warning("sip: gateway to %s not advertised: %s", domain, e)
            await asyncio.sleep(GATEWAY_LIFETIME_S / 3)

    def _link_to(self, uri: Uri) -> Link:
        node = uri.param(TUNNEL_PARAM)  # a front that is reached through the overlay (its Record-Route)
        if node and len(node) <= 40 and all(c in "0123456789abcdef" for c in node):
            return Link("TUNNEL", (uri.host, uri.port or 5060), int(node, 16))
        transport = "TCP" if (uri.param("transport") or "").lower() == "tcp" else "UDP"
        return Link(transport, (uri.host, uri.port or 5060))

    def _is_me(self, uri: Uri) -> bool:
        return uri.host in self._my_hosts and (uri.port or 5060) == self.port

    # ------------------------------------------------------------------ forwarding (§16.6)

    def _forward(self, req: SipRequest, upstream: Link, downstream: Link, *, branch: str | None = None) -> None:
        hops = req.max_forwards()
        if hops == 0:
            if req.method != "ACK":
                self._respond(req, upstream, 483)
            return
        vias = req.get_all("via")
        loop_hash = _digest(req.uri, _tag(req.get("from")), _tag(req.get("to")), req.get("call-id") or "",
                            str(req.cseq()[0]), *req.get_all("route"))[:16]
        for text in vias:
            via = Via.parse(text)
            if via.host in self._my_hosts and via.port == self.port and (via.branch or "").endswith("." + loop_hash):
                if req.method != "ACK":
                    self._respond(req, upstream, 482)
                return
        theirs = _their_branch(req)
        if branch is None:
            branch = f"{MAGIC}{_digest(theirs, str(self.config.node_id))[:12]}.{loop_hash}"
        out = SipRequest(method=req.method, uri=req.uri, headers=list(req.headers), body=req.body)
        _set(out, "max-forwards", str(hops - 1))
        out.headers.insert(0, ("Via", self._via(downstream, branch)))
        if req.method in DIALOG_CREATING and _tag(req.get("to")) == "":
            transport = ";transport=tcp" if "TCP" in (upstream.transport, downstream.transport) else ""
            tunnel = "" if self.config.reachable else f";{TUNNEL_PARAM}={self.config.node_id:x}"
            out.headers.insert(1, ("Record-Route",
                                   f"<sip:{self.config.advertise_host}:{self.port}{transport}{tunnel};lr>"))
        data = out.to_bytes()
        if req.method != "ACK":
            if len(self._by_branch) >= TRANSACTIONS_MAX:
                self._respond(req, upstream, 503, "Service Unavailable (too many transactions)")
                return
            t = _Transaction(req, upstream, downstream, branch, data)
            self._by_branch[(branch, req.method)] = t
            self._by_upstream[(theirs, req.method)] = t
            t.timer = self._loop.call_later(self.config.reach_timeout_s, self._unanswered, t)
        self._send(data, downstream)

    def _retransmitted(self, t: _Transaction) -> None:
        if t.final is not None:
            if t.final and t.upstream is not None:
                self._send(t.final, t.upstream)
        elif t.downstream.transport == "UDP" and not t.answered:
            self._send(t.sent, t.downstream)

    def _via(self, link: Link, branch: str) -> str:
        return f"SIP/2.0/{link.via_transport} {self.config.advertise_host}:{self.port};branch={branch}"

    def _cancel(self, req: SipRequest, link: Link, invite: _Transaction | None) -> None:
        if invite is None:
            self._respond(req, link, 481)
            return
        self._respond(req, link, 200)
        if invite.final is None:
            cancel = SipRequest(method="CANCEL", uri=invite.request.uri, body=b"", headers=[
                ("Via", self._via(invite.downstream, invite.branch)),
                ("Max-Forwards", "70"), ("From", invite.request.get("from") or ""),
                ("To", invite.request.get("to") or ""), ("Call-ID", invite.request.get("call-id") or ""),
                ("CSeq", f"{invite.request.cseq()[0]} CANCEL")])
            self._send(cancel.to_bytes(), invite.downstream)

    def _unanswered(self, t: _Transaction) -> None:
        """The next hop said nothing, or never gave a final answer."""
        t.timer = None
        if t.final is not None:
            self._forget(t)
            return
        if t.on_final is not None:
            t.on_final(SipResponse(status=408, reason="Request Timeout"))
            self._forget(t)
            return
        if t.request.method == "MESSAGE" and not t.answered:
            aor = self._aor_of(t.request)
            if aor is not None:
                upstream = t.upstream
                assert upstream is not None

                async def keep() -> None:
                    t.final = await self._keep_offline(t.request, upstream, aor)

                self._serve(t.request, upstream, keep())
                t.final, t.made_final = b"", True
                t.timer = self._loop.call_later(TRANSACTION_TIMEOUT_S, self._forget, t)
                return
        assert t.upstream is not None
        status = 408 if t.answered else 480
        t.final = self._respond(t.request, t.upstream, status,
                                None if t.answered else "Temporarily Unavailable (callee not reachable)")
        t.made_final = True
        t.timer = self._loop.call_later(TRANSACTION_TIMEOUT_S, self._forget, t)

    def _forget(self, t: _Transaction) -> None:
        if t.timer is not None:
            t.timer.cancel()
        self._by_branch.pop((t.branch, t.request.method), None)
        self._by_upstream.pop((_their_branch(t.request), t.request.method), None)

    # ------------------------------------------------------------------ responses (§16.7)

    def _on_response(self, resp: SipResponse) -> None:
        vias = resp.get_all("via")
        if not vias:
            raise SipParseError("response without Via")
        top = Via.parse(vias[0])
        if top.host not in self._my_hosts or top.port != self.port:
            self.counters["sip dropped: response not for us"] += 1
            return
        _drop_first(resp, "via")
        self.counters[f"sip response {resp.status // 100}xx"] += 1
        _, method = resp.cseq()
        t = self._by_branch.get((top.branch or "", method))
        if t is None:
            if len(vias) > 1:  # a late answer (a 2xx retransmission): route it by its Via
                nxt = Via.parse(vias[1])
                self._send(resp.to_bytes(), Link(nxt.transport if nxt.transport == "TCP" else "UDP", nxt.reply_to()))
            return
        t.answered = True
        if resp.status == 100:
            if t.timer is not None and method == "INVITE" and t.final is None:
                t.timer.cancel()
                t.timer = self._loop.call_later(INVITE_FINAL_TIMEOUT_S, self._unanswered, t)
            return
        if t.on_final is not None:
            if resp.status >= 200:
                t.on_final(resp)
                self._forget(t)
            return
        assert t.upstream is not None
        if t.made_final and not (method == "INVITE" and 200 <= resp.status < 300):
            return  # we answered upstream already; only a 2xx to an INVITE still goes through
        data = resp.to_bytes()
        self._send(data, t.upstream)
        if t.timer is not None:
            t.timer.cancel()
        if resp.status >= 200:
            t.final = data
            t.timer = self._loop.call_later(TRANSACTION_TIMEOUT_S, self._forget, t)
        else:
            t.timer = self._loop.call_later(
                INVITE_FINAL_TIMEOUT_S if method == "INVITE" else TRANSACTION_TIMEOUT_S, self._unanswered, t)

    def _respond(self, req: SipRequest, link: Link, status: int, reason: str | None = None,
                 extra: list[tuple[str, str]] | None = None) -> bytes:
        """Answer `req` ourselves (§8.2.6): its Via, From, To (with our tag), Call-ID and CSeq."""
        resp = SipResponse(status=status, reason=reason or REASONS.get(status, "Unknown"))
        for name in ("via", "from", "to", "call-id", "cseq"):
            for n, v in req.headers:
                if canonical(n) == name:
                    if name == "to" and status > 100 and ";tag=" not in v.replace(" ", ""):
                        v = f"{v};tag={_digest(req.get('call-id') or '', self.config.advertise_host)[:10]}"
                    resp.headers.append((n, v))
        resp.headers += [("Server", "peerphone"), *(extra or [])]
        data = resp.to_bytes()
        self._send(data, link)
        return data

    # ------------------------------------------------------------------ offline messages (seed 000)

    def _aor_of(self, req: SipRequest) -> str | None:
        try:
            to = NameAddr.parse(req.get("to") or "").uri
        except SipParseError:
            return None
        return f"sip:{to.user}@{self.config.domain}" if to.user else None

    async def _keep_offline(self, req: SipRequest, link: Link, aor: str) -> bytes:
        """Append the MESSAGE under `aor` and answer 202, or 480 if it cannot be kept; the answer."""
        sender = str(NameAddr.parse(req.get("from") or "").uri)
        try:
            record = OfflineMessage(sender, req.get("content-type") or "text/plain",
                                    req.body.decode("utf-8", "replace")).to_bytes()
        except RecordError as e:
            return self._respond(req, link, 480, f"Temporarily Unavailable ({e})")
        entry = Entry(ARRAY_APPEND, record, time.time_ns() // 1_000_000, OFFLINE_LIFETIME_S)
        try:
            await self.overlay.store(id_from_name(aor), Kind.OFFLINE_MESSAGE, MODEL_OF[Kind.OFFLINE_MESSAGE], [entry])
        except Exception as e:
            log.warning("sip: offline message for %s not kept: %s", aor, e)
            return self._respond(req, link, 480, "Temporarily Unavailable (could not keep the message)")
        self.counters["sip messages kept offline"] += 1
        log.info("sip: kept a message for %s until it registers", aor)
        return self._respond(req, link, 202, "Accepted (kept until the recipient registers)")

    async def _deliver_offline(self, aor: str) -> None:
        try:
            answer = await self.overlay.fetch(id_from_name(aor), Kind.OFFLINE_MESSAGE)
        except Exception as e:
            log.info("sip: offline messages of %s not fetched: %s", aor, e)
            return
        binding = self._local_binding(aor)
        for entry in sorted(answer.entries, key=lambda e: e.key if isinstance(e.key, int) else 0):
            if binding is None or not isinstance(entry.key, int):
                return
            try:
                message = OfflineMessage.from_bytes(entry.value)
            except RecordError:
                self.counters["sip bad offline records"] += 1
                continue
            status = await self._send_message(binding, aor, message)
            if 200 <= status < 300:
                done = Entry(entry.key, b"", time.time_ns() // 1_000_000, 0)
                try:
                    await self.overlay.store(id_from_name(aor), Kind.OFFLINE_MESSAGE,
                                             MODEL_OF[Kind.OFFLINE_MESSAGE], [done])
                except Exception as e:
                    log.info("sip: delivered message of %s not removed: %s", aor, e)
                self.counters["sip offline messages delivered"] += 1

    async def _send_message(self, binding: _Binding, aor: str, message: OfflineMessage) -> int:
        """Send a kept MESSAGE to the UA ourselves (a UAC transaction); its final status."""
        done: asyncio.Future[int] = self._loop.create_future()
        branch = f"{MAGIC}{os.urandom(8).hex()}"
        req = SipRequest(method="MESSAGE", uri=binding.contact, body=message.text.encode(), headers=[
            ("Via", self._via(binding.link, branch)),
            ("Max-Forwards", "70"), ("From", f"<{message.sender}>;tag={os.urandom(5).hex()}"), ("To", f"<{aor}>"),
            ("Call-ID", f"{os.urandom(8).hex()}@{self.config.advertise_host}"), ("CSeq", "1 MESSAGE"),
            ("Content-Type", message.content_type)])

        def finished(response: SipResponse) -> None:
            if not done.done():
                done.set_result(response.status)

        t = _Transaction(req, None, binding.link, branch, req.to_bytes(), on_final=finished)
        self._by_branch[(branch, "MESSAGE")] = t
        t.timer = self._loop.call_later(self.config.reach_timeout_s, self._unanswered, t)
        interval = T1_S
        while not done.done():
            self._send(t.sent, binding.link)
            await asyncio.wait([done], timeout=interval)
            interval = min(interval * 2, 4.0)
        return done.result()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, front: SipFront) -> None:
        self.front = front

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.front.receive(data, Link("UDP", (addr[0], addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("sip: socket error %s", exc)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            value = value.strip()
            return int(value) if value.isdigit() and len(value) <= 6 else None
    return 0


def _their_branch(req: SipRequest) -> str:
    """The top Via's branch: the previous hop's transaction (a digest of the Vias if it set none)."""
    vias = req.get_all("via")
    return (Via.parse(vias[0]).branch or _digest(*vias)) if vias else ""


def _digest(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()


def _tag(value: str | None) -> str:
    if not value:
        return ""
    try:
        return NameAddr.parse(value).param("tag") or ""
    except SipParseError:
        return ""


def _int_or(text: str | None, default: int) -> int:
    text = (text or "").strip()
    return int(text) if text.isdigit() and len(text) <= 10 else default


def _gateway_key(domain: str) -> int:
    return id_from_name(f"sip-gateway:{domain}")


def _contact_key(contact: str) -> bytes:
    return hashlib.sha1(contact.encode()).digest()


def _is_address(host: str) -> bool:
    return host.replace(".", "").isdigit() or host.startswith("[")


def _set(msg: SipRequest, name: str, value: str) -> None:
    msg.headers = [(n, v) for n, v in msg.headers if n.lower() != name] + [(name.title(), value)]


def _drop_first(msg: SipRequest | SipResponse, name: str) -> None:
    """Remove the first value of header `name` (the topmost Via or Route)."""
    for i, (header, value) in enumerate(msg.headers):
        if canonical(header) == name:
            _first, sep, rest = value.partition(",")  # naive for quoted commas; Via and Route have none
            if sep and rest.strip():
                msg.headers[i] = (header, rest.strip())
            else:
                del msg.headers[i]
            return


def _http_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
