"""The SIP front of a peer: a registrar and proxy (RFC 3261 §10, §16) for any SIP phone, sans-I/O.

The overlay is the location service. REGISTER stores AOR -> contact (and this
front's address and node id) in the overlay as a SIP registration; a request for
an AOR of the overlay's domain is sent to the contact when the UA registered
here, else to the fronts that serve it, found by an overlay fetch, newest first
and the others in turn when one fails (serial forking, §16.6). That front hands it
to its UA. A front whose callee cannot be reached says 480; a MESSAGE
for an AOR that is not online is kept in the overlay and delivered when the AOR
registers (seed 000). Requests for other domains go to the gateway configured for
them (seed 002, §3.4), and requests from there for overlay AORs are served alike.

The front has the core's contract (STYLE.md habit 1): received bytes with their
`Link` and `now_ms`, overlay answers and timer expiries go in; messages to send,
overlay requests to make, one next deadline and events come out. Randomness
(branches, tags, Call-IDs) comes from the `entropy` it is given. It owns no
socket, task or clock: `net.sip_transport` drives it on real sockets, `sim.calls`
in the simulator, and the tests with literal times.

The proxy is transaction-stateful (§16.2): every request gets a server
transaction and every request it sends a client transaction (`transaction.py`,
§17); it sends 100 Trying to every INVITE, matches CANCEL to its INVITE, gives a
branch `reach_timeout_ms` to answer at all (480 after that; a MESSAGE is kept
offline instead) and an INVITE Timer C (§16.6 step 11) to answer finally (408).
REGISTER and OPTIONS, which the front serves itself, are answered as a
stateless UAS once answered (§8.2.7): a retransmission is served again, which is
idempotent. A request that does not parse is dropped and counted; one that parses
but misses a mandatory header is answered 400. Nothing raised while handling a
message leaves `receive`.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from functools import partial
from typing import Callable, Union

from ..core.access import NOT_NAMED
from ..core.deadlines import Deadlines
from ..core.errors import ErrorCode
from ..core.events import RequestCompleted
from ..core.ids import id_from_hex, id_from_name
from ..core.ingress import BoundedLru
from ..core.limits import (
    BINDINGS_MAX,
    CLIENT_KEEPALIVE_MS,
    CONTACTS_PER_AOR_MAX,
    LIFETIME_S_MAX,
    REGISTRATION_LIFETIME_S_MAX,
    SIP_RECENT_ANSWERS_MAX,
    SIP_REGISTER_STORES_MAX,
    SIP_RESOLVING_MAX,
    SIP_TRANSACTIONS_MAX,
)
from ..core.names import NameTicket
from ..core.peer import PeerNode
from ..core.security import Signer
from ..core.usages import MODEL_OF, Kind, OfflineMessage, RecordError, Registration
from ..core.wire.messages import ARRAY_APPEND, Addr, DataModel, Entry, Error, FetchAns
from . import tunnel
from .auth import Credentials, DigestAuth, Verdict, open_key, parse_digest
from .bindings import Binding, Bindings, instance_of
from .message import SipParseError, SipRequest, SipResponse, canonical, check_request, parse, salvage
from .transaction import T1_MS, Action, Input, State, Transaction, TransactionError, response_input
from .transaction import Kind as TxKind
from .uri import NameAddr, Uri, Via

log = logging.getLogger("peerphone.sip")

EXPIRES_DEFAULT_S = 3600
EXPIRES_MAX_S = REGISTRATION_LIFETIME_S_MAX
TRANSACTIONS_MAX = SIP_TRANSACTIONS_MAX
RESOLVING_MAX = SIP_RESOLVING_MAX
RESOLVING_PER_SOURCE_MAX = RESOLVING_MAX * 3 // 4  # a quarter is always left for the others
OVERLAY_TIMEOUT_MS = 10_000  # an overlay request the driver never completes is given up after this
# A registration lookup that fails, or is not answered within LOOKUP_FIRST_TIMEOUT_MS (most take
# well under a second; under churn a few wait for the overlay's end-to-end retransmission), is
# asked once more, on a fresh route, before the caller gets 480.
LOOKUP_ATTEMPTS = 2
LOOKUP_FIRST_TIMEOUT_MS = 3000
FORKS_MAX = 4  # fronts of one callee tried in turn
# Requests that speak as their caller (From): a front with users checks who sends them, but for
# those on the route it recorded for their dialog.
CALLER_CHECKED = frozenset({"INVITE", "MESSAGE", "SUBSCRIBE", "REFER", "PUBLISH"})
LOOPBACK = "127.0.0.1"
STREAMS = ("TCP", "TLS")  # connection-oriented transports: answers and retransmissions ride the connection
REACH_TIMEOUT_MS = 4000
TIMER_C_MS = 180_000
SERVER_GIVE_UP_MS = TIMER_C_MS + 64 * 500  # a request nothing answered by then gets a 408 (a safety net)
RETRY_AFTER_S = 5
GATEWAY_LIFETIME_S = 180
# An enrolled overlay: our node's ticket for a name lives this long in the overlay, and is
# stored again before a registration of the name once half of that has passed.
TICKET_LIFETIME_S = 2 * 3600
TUNNEL_PARAM = "pp-node"  # on our Record-Route when we are reached through the overlay: our node id
VIA_PARAM = "pp-via"  # and when we are a client: our admitting peer's
ROUTE_TOKEN_PARAM = "pp-rr"  # on our Record-Route: proof, when it comes back as a Route, that we recorded it
OFFLINE_LIFETIME_S = min(LIFETIME_S_MAX, 7 * 24 * 3600)
OFFLINE_RECHECK_MS = 300_000
# Every binding's copy in the overlay is looked at about this often, and stored again if it
# is gone (its holders all died before they passed it on): a live phone stays reachable. The
# phones' own requests come first: no looking while a quarter of the wait queue is in use.
# A client's keepalive period: on a client, the look is the keepalive.
AUDIT_CYCLE_MS = CLIENT_KEEPALIVE_MS
AUDIT_TICK_MS = 1000
AUDITS_PER_TICK_MAX = 50
# A node failed that may have held some of them (its copies are gone until re-replication
# ends): a new round starts at once, not at most once per AUDIT_SOON_MS.
AUDIT_SOON_MS = 5000
# A REGISTER or OPTIONS answered statelessly is remembered by its bytes for a little while: a
# retransmission (the answer was lost, or late: a phone repeats after 500 ms) costs a lookup,
# not a REGISTER. Without it, a front that fell half a second behind at 2,000 REGISTERs/s
# served each one again and again and fell further behind (tools/bench sip-load).
RECENT_ANSWERS_MAX = SIP_RECENT_ANSWERS_MAX
# While the overlay keeps up, a REGISTER is answered once its binding is stored (a failure is a
# 503, and the phone may try its other proxy). When REGISTER_STORES_MAX stores are on their way
# already, the binding is kept here, answered 200 at once and stored behind, as stores finish:
# a burst of new phones is served at the registrar's pace, not the overlay's, and the bindings
# table (bounded) is the queue. Removals always wait for their store (issue 10).
REGISTER_STORES_MAX = SIP_REGISTER_STORES_MAX
MAGIC = "z9hG4bK"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, REGISTER, INFO, UPDATE, REFER, PRACK"
DIALOG_CREATING = ("INVITE", "SUBSCRIBE", "REFER")
STATELESS_ONCE_ANSWERED = ("REGISTER", "OPTIONS")  # requests we serve ourselves, idempotently
REASONS = {100: "Trying", 200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 407: "Proxy Authentication Required", 408: "Request Timeout",
           480: "Temporarily Unavailable",
           481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
           500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
           505: "Version Not Supported"}


@dataclass(frozen=True)
class Link:
    """Where a message goes or came from: a transport and the far end's address."""

    transport: str  # "UDP", "TCP", "TLS", or "TUNNEL": through the overlay to `node_id`
    addr: Addr
    # TUNNEL: the node to reach, or the node it came from; TLS: the node the far end must prove
    # to be, or proved to be (0: a phone, anyone)
    node_id: int = 0
    via: int | None = None  # a TUNNEL to a client: its admitting peer

    @property
    def via_transport(self) -> str:
        return self.transport if self.transport in STREAMS else "UDP"

    @property
    def reliable(self) -> bool:
        return self.transport in STREAMS


@dataclass
class FrontConfig:
    domain: str
    node_id: int
    advertise_host: str
    port: int = 5060  # where we listen (UDP and TCP): in our Via and Record-Route
    tls_port: int = 0  # where we listen for SIP over TLS (0: we do not); other fronts call us there
    reach_timeout_ms: int = REACH_TIMEOUT_MS  # no answer at all from the next hop within this: 480
    reachable: bool = True  # False: other fronts send to us through the overlay (we are behind NAT)
    admitting: int | None = None  # our node is a client attached to this peer: we are reached through it
    gateways: dict[str, Addr] = field(default_factory=dict)  # foreign domain -> its proxy
    # The users this front registers, with their passwords (digest, auth.py); None: anyone
    # may register any AOR of the domain (an ad-hoc overlay with no configuration).
    users: Credentials | None = None
    # An enrolled overlay: the names the authority gave our node, each with its ticket
    # (core/names.py). Only those are registered here, sealed with the node's key, and only
    # registrations sealed by a key a ticket names are believed. None: ad hoc.
    tickets: dict[str, NameTicket] | None = None


# -- what the front asks of the overlay (its driver starts them on a PeerNode) --

@dataclass(frozen=True)
class OverlayStore:
    handle: int
    resource: int
    kind: int
    model: DataModel
    entries: tuple[Entry, ...]
    signer: Signer | None = None  # None: the node's own key

    def start(self, node: PeerNode, now_ms: int) -> int:
        return node.store(self.resource, self.kind, self.model, self.entries, now_ms=now_ms, signer=self.signer)


@dataclass(frozen=True)
class OverlayFetch:
    handle: int
    resource: int
    kind: int

    def start(self, node: PeerNode, now_ms: int) -> int:
        return node.fetch(self.resource, self.kind, now_ms=now_ms)


@dataclass(frozen=True)
class OverlayTunnel:
    handle: int
    node_id: int
    payload: bytes
    via: int | None = None

    def start(self, node: PeerNode, now_ms: int) -> int:
        return node.tunnel(self.node_id, self.payload, now_ms=now_ms, via=self.via)


OverlayRequest = Union[OverlayStore, OverlayFetch, OverlayTunnel]


# -- events (past tense) --

@dataclass(frozen=True)
class Registered:
    aor: str
    contacts: int  # bindings now held here (0: unregistered)


@dataclass(frozen=True)
class KeptOffline:
    aor: str


@dataclass(frozen=True)
class DeliveredOffline:
    aor: str


@dataclass(frozen=True)
class Forwarded:
    """A request went on toward its target (an INVITE: a call routed)."""

    method: str
    call_id: str
    to: Link


FrontEvent = Union[Registered, KeptOffline, DeliveredOffline, Forwarded]
Answer = Callable[[FetchAns | None, Error | None, int], None]  # (answer, error, now_ms)


@dataclass(eq=False)
class _Server:
    """A request we received: its server transaction, and the answer it got."""

    key: tuple[str, str]  # (their branch, method)
    request: SipRequest
    link: Link
    txn: Transaction
    last: bytes = b""  # the last response sent, repeated on retransmissions
    client: "_Client | None" = None  # where we forwarded it
    answered_here: bool = False  # the final answer upstream was ours, not the next hop's
    tu_deadline_ms: int | None = None  # a safety net: unanswered this long, it gets a 408 and goes
    alternatives: list[Link] = field(default_factory=list)  # other fronts of the callee, tried in turn
    forks: int = 0  # branches made so far (each has its own)
    rerouted: bool = False  # an in-dialog request sent round a dead hop by its AOR (once)
    raw: bytes = b""  # as it came, for a request answered statelessly (see _recent_answers)


@dataclass(eq=False)
class _Client:
    """A request we sent: its client transaction, and what to do with its answers."""

    key: tuple[str, str]  # (our branch, method)
    request: SipRequest  # as sent
    sent: bytes
    link: Link
    txn: Transaction
    server: _Server | None  # the request it forwards (None: our own request)
    on_final: Callable[[int, int], None] | None = None  # our own request: (status, now_ms)
    heard: bool = False  # any response at all
    tu_deadline_ms: int | None = None  # the reach timeout, then Timer C, then the wait after a CANCEL
    cancelled: bool = False


@dataclass(eq=False)
class _Wait:
    handle: int
    then: Answer
    server_key: tuple[str, str] | None  # a request waiting for the overlay (bounded by RESOLVING_MAX)
    source: str  # who sent that request (see _source_of), "" for the front's own work
    deadline_ms: int


_GATEWAYS = "advertise gateways"
_AUDIT = "audit bindings"
NO_ANSWER = Error(ErrorCode.UNREACHABLE, "no answer from the overlay")
_ANSWERED = SipRequest(method="", uri="")  # what an answered server transaction keeps of its request
Timed = Union[_Server, _Client, _Wait, str]
Change = tuple[str, str, int]  # of a registration: (contact URI, its other parameters, expires; 0 removes)


class SipFront:
    def __init__(self, config: FrontConfig, *, entropy: Callable[[int], bytes], now_ms: int,
                 wall_offset_ms: int = 0) -> None:
        """`wall_offset_ms` turns `now_ms` into the wall clock of storage times (newest wins
        across fronts); the simulator's fronts share one clock and leave it 0."""
        self.config = config
        self._entropy = entropy
        self._route_secret = entropy(16).hex()
        self._auth = DigestAuth(config.users, config.domain, entropy(32)) if config.users is not None else None
        self._wall_offset_ms = wall_offset_ms
        self._bindings = Bindings(BINDINGS_MAX, CONTACTS_PER_AOR_MAX)
        self._delivering: set[str] = set()  # AORs whose kept messages are being delivered: once at a time
        self._audit_queue: deque[str] = deque()  # AORs whose overlay copies are looked at next
        self._audit_per_tick = 1
        self._audit_cycle_ms = now_ms  # when the next round of looking starts
        self._recent_answers: BoundedLru[bytes, tuple[Link, bytes]] = BoundedLru(RECENT_ANSWERS_MAX)
        self._receiving = b""  # the message being handled, as it came
        self._register_stores = 0  # in flight, answered after or stored behind (REGISTER_STORES_MAX)
        self._behind: dict[str, None] = {}  # AORs whose new bindings wait to be stored, oldest first
        self._tickets_until: dict[str, int] = {}  # an enrolled overlay: until when our ticket for an AOR is stored
        self._servers: dict[tuple[str, str], _Server] = {}
        self._clients: dict[tuple[str, str], _Client] = {}
        self._waits: dict[int, _Wait] = {}
        self._resolving = 0
        self._resolving_from: Counter[str] = Counter()  # the same, per source: none may take it all
        self._handles = 0
        self._timers: Deadlines[Timed] = Deadlines()
        self._my_hosts = {config.advertise_host.lower(), LOOPBACK, "localhost"}
        self._reassembler = tunnel.Reassembler()
        self._out: list[tuple[bytes, Link]] = []
        self._requests: list[OverlayRequest] = []
        self._events: list[FrontEvent] = []
        self.counters: Counter[str] = Counter()
        if config.gateways:
            self._timers.set(_GATEWAYS, now_ms)

    # ------------------------------------------------------------------ outputs

    def messages_to_send(self) -> list[tuple[bytes, Link]]:
        out, self._out = self._out, []
        return out

    def overlay_requests(self) -> list[OverlayRequest]:
        out, self._requests = self._requests, []
        return out

    def events(self) -> list[FrontEvent]:
        out, self._events = self._events, []
        return out

    def next_deadline_ms(self) -> int | None:
        return self._timers.next_ms()

    @property
    def transactions(self) -> int:
        return len(self._servers) + len(self._clients)

    @property
    def resolving(self) -> int:
        return self._resolving

    def close(self) -> None:
        if self.counters or self._reassembler.counters:
            counts = self.counters + self._reassembler.counters
            log.info("sip front counters: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))

    # ------------------------------------------------------------------ inputs

    def receive(self, data: bytes, link: Link, *, now_ms: int) -> None:
        """One message from the network. Nothing raised here leaves the front."""
        if not data.strip(b"\r\n"):
            return  # keepalive
        again = self._recent_answers.get(data)
        if again is not None and again[0] == link:
            self.counters["sip retransmissions answered again"] += 1
            self._send(again[1], link)
            return
        self._receiving = data
        try:
            message = parse(data)
        except SipParseError as e:
            salvaged = salvage(data)  # answered where it came from, with its own headers: no reflection
            if salvaged is None:
                self.counters["sip dropped: unparseable"] += 1
                log.debug("sip: dropped from %s: %s", link.addr, e.reason)
                return
            self.counters[f"sip answered {e.status} (unparseable)"] += 1
            self._respond_stateless(salvaged, link, e.status, e.reason)
            return
        self._guarded(lambda: self._on_response(message, now_ms) if isinstance(message, SipResponse)
                      else self._on_request(message, link, now_ms), message, link, now_ms)

    def receive_tunnelled(self, origin: int, payload: bytes, *, now_ms: int, via: int | None = None) -> None:
        """One part of a SIP message carried through the overlay; the message once all have come.
        `via`: the origin is a client, whose answers go through this peer."""
        whole = self._reassembler.add(origin, payload, now_ms=now_ms)
        if whole is not None:
            self.counters["sip tunnelled in"] += 1
            self.receive(whole, Link("TUNNEL", ("", 0), origin, via), now_ms=now_ms)

    def overlay_answered(self, handle: int, answer: FetchAns | None, error: Error | None, *, now_ms: int) -> None:
        """The overlay finished request `handle` (an `answer` to a fetch, or an `error`)."""
        wait = self._waits.pop(handle, None)
        if wait is None:
            return  # given up on already
        self._timers.discard(wait)
        if wait.server_key is not None:
            self._resolving -= 1
            self._resolving_from[wait.source] -= 1
            if self._resolving_from[wait.source] <= 0:
                del self._resolving_from[wait.source]
        server = self._servers.get(wait.server_key) if wait.server_key else None
        self._guarded(lambda: wait.then(answer, error, now_ms), server.request if server else None,
                      server.link if server else None, now_ms)

    def overlay_completed(self, handle: int, done: RequestCompleted, *, now_ms: int) -> None:
        """`overlay_answered` from the node's own completion event."""
        if done.error is not None:
            self.overlay_answered(handle, None, done.error, now_ms=now_ms)
        else:
            self.overlay_answered(handle, done.answer if isinstance(done.answer, FetchAns) else None, None,
                                  now_ms=now_ms)

    def transport_failed(self, link: Link, *, now_ms: int) -> None:
        """`link` cannot carry messages (a TCP connect refused, a tunnel that failed): every
        request we sent on it fails at once (§17.1.4), not after its timer."""
        for client in [c for c in self._clients.values() if c.link == link]:
            self._client_input(client, Input.TRANSPORT_ERROR, None, now_ms)

    def handle_timer(self, *, now_ms: int) -> None:
        for item in self._timers.pop_due(now_ms):
            if isinstance(item, _Wait):
                if self._waits.get(item.handle) is item:
                    self.overlay_answered(item.handle, None, NO_ANSWER, now_ms=now_ms)
            elif isinstance(item, _Client):
                self._guarded(partial(self._client_timer, item, now_ms), None, None, now_ms)
            elif isinstance(item, _Server):
                self._guarded(partial(self._server_timer, item, now_ms), None, None, now_ms)
            elif item == _AUDIT:
                self._guarded(partial(self._audit, now_ms), None, None, now_ms)
            else:
                self._advertise_gateways(now_ms)

    # ------------------------------------------------------------------ ingress

    def _guarded(self, work: Callable[[], None], request: SipRequest | SipResponse | None, link: Link | None,
                 now_ms: int) -> None:
        try:
            work()
        except SipParseError as e:
            self.counters["sip answered 400"] += 1
            self._fail(request, link, e.status, e.reason, now_ms)
        except Exception:  # a bug must not stop the front serving everybody else
            self.counters["sip internal errors"] += 1
            log.exception("sip: error handling a message from %s", link.addr if link else "a timer")
            self._fail(request, link, 500, None, now_ms)

    def _fail(self, request: SipRequest | SipResponse | None, link: Link | None, status: int, reason: str | None,
              now_ms: int) -> None:
        """Answer a request whose handling failed: through its transaction if it has one."""
        if not isinstance(request, SipRequest) or request.method == "ACK" or link is None:
            return
        try:
            server = self._servers.get((_their_branch(request), request.method))
        except SipParseError:
            server = None
        if server is None:
            self._respond_stateless(request, link, status, reason)
        elif not server.answered_here and server.txn.state in (State.TRYING, State.PROCEEDING):
            self._answer(server, status, reason, now_ms=now_ms)

    def _on_request(self, req: SipRequest, link: Link, now_ms: int) -> None:
        if not req.get_all("via"):
            raise SipParseError("missing via header")
        if link.transport != "TUNNEL":
            self._note_source(req, link)
        check_request(req)
        # Before a transaction is made for it, what we read of it must be well formed: a bad one
        # is answered 400 alone (RFC 4475 §3.1.2).
        if Uri.parse(req.uri).has_headers:
            raise SipParseError("headers in the Request-URI")
        for via in req.get_all("via"):
            Via.parse(via)
        for name in ("from", "to", *(("contact",) if req.get("contact") != "*" else ())):
            for value in req.get_all(name) if name == "contact" else [req.get(name) or ""]:
                NameAddr.parse(value)
        self.counters[f"sip {req.method}"] += 1
        theirs = _their_branch(req)
        if req.method == "ACK":
            invite = self._servers.get((theirs, "INVITE"))
            if invite is not None:  # the ACK to a failure: hop by hop, absorbed here (§17.2.1)
                self._server_actions(invite, invite.txn.fire(Input.ACK, now_ms=now_ms), b"")
            else:  # the ACK to a 2xx: a request of its own, routed statelessly
                self._route(None, req, link, now_ms)
            return
        again = self._servers.get((theirs, req.method))
        if again is not None:
            self.counters["sip retransmissions absorbed"] += 1
            self._server_actions(again, again.txn.fire(Input.REQUEST, now_ms=now_ms), b"")
            return
        in_dialog = _tag(req.get("to")) != ""
        if self.transactions >= TRANSACTIONS_MAX:
            if in_dialog and req.method != "CANCEL":  # never refused for capacity: forwarded statelessly
                self.counters["sip forwarded statelessly (transactions full)"] += 1
                self._route(None, req, link, now_ms)
            else:
                self._respond_stateless(req, link, 503, "Service Unavailable (too many transactions)",
                                        [("Retry-After", str(RETRY_AFTER_S))])
            return
        kind = TxKind.INVITE_SERVER if req.method == "INVITE" else TxKind.NON_INVITE_SERVER
        server = _Server((theirs, req.method), req, link, Transaction.start(kind, reliable=link.reliable,
                                                                             now_ms=now_ms),
                         tu_deadline_ms=now_ms + SERVER_GIVE_UP_MS,
                         raw=self._receiving if req.method in STATELESS_ONCE_ANSWERED else b"")
        self._servers[server.key] = server
        if req.method == "INVITE":
            self._answer(server, 100, now_ms=now_ms)
        if req.method == "CANCEL":
            self._cancel(server, self._servers.get((theirs, "INVITE")), now_ms)
            return
        self._route(server, req, link, now_ms)

    def _route(self, server: _Server | None, req: SipRequest, link: Link, now_ms: int) -> None:
        """Where a new request goes (§16.4, §16.5); `server` is None for a stateless one (an ACK)."""
        routes = req.get_all("route")
        recorded = False
        while routes and self._is_me(ours := NameAddr.parse(routes[0]).uri):  # two when we record-routed twice
            recorded = recorded or ours.param(ROUTE_TOKEN_PARAM) == self._route_token(req)
            _drop_first(req, "route")
            routes = routes[1:]
        if not recorded and req.method in CALLER_CHECKED and not self._caller_proven(server, req, link, now_ms):
            return  # a To tag alone makes no dialog of ours: only our route's token does
        # Not an open relay: our phones may send anywhere through us, and so may a dialog we
        # recorded a route for; anyone else only to this domain's AORs, to contacts registered
        # here and to gateways.
        relay = recorded or link.transport == "TUNNEL" or self._bindings.is_phone(_source_of(link))
        if routes:
            nxt = NameAddr.parse(routes[0]).uri
            if relay or self._may_reach(nxt):
                self._forward(server, req, link, self._link_to(nxt), now_ms)
            else:
                self._refuse_relay(server, now_ms)
            return
        uri = Uri.parse(req.uri)
        if uri.user is None and (self._is_me(uri) or uri.host == self.config.domain):
            self._to_me(server, req, link, uri, now_ms)
        elif req.method == "REGISTER" and server is not None:
            self._register(server, uri, now_ms)
        elif uri.host == self.config.domain or (self._is_me(uri) and uri.user):
            self._to_aor(server, req, link, f"sip:{uri.user}@{self.config.domain}", now_ms)
        elif _is_address(uri.host):
            if relay or self._may_reach(uri):
                self._forward(server, req, link, self._link_to(uri), now_ms)  # in-dialog, straight to a contact
            else:
                self._refuse_relay(server, now_ms)
        elif uri.host in self.config.gateways:
            self._forward(server, req, link, Link("UDP", self.config.gateways[uri.host]), now_ms)
        else:
            self._to_gateway(server, req, link, uri.host, now_ms)

    def _may_reach(self, uri: Uri) -> bool:
        """Where a stranger's request may go next: a phone registered here, or a gateway."""
        return (self._bindings.is_contact(uri.host, uri.port_or_default) or uri.host in self.config.gateways
                or (uri.host, uri.port_or_default) in self.config.gateways.values())

    def _refuse_relay(self, server: _Server | None, now_ms: int) -> None:
        self.counters["sip refused: not a relay"] += 1
        self._answer_if(server, 403, "Forbidden (not a relay for you)", now_ms)

    def _route_token(self, req: SipRequest) -> str:
        return _digest(self._route_secret, req.get("call-id") or "")[:16]

    def _to_me(self, server: _Server | None, req: SipRequest, link: Link, uri: Uri, now_ms: int) -> None:
        if server is None:
            return  # an ACK for us: nothing to do
        if req.method == "OPTIONS":
            self._answer(server, 200, extra=[("Allow", ALLOW), ("Accept", "application/sdp")], now_ms=now_ms)
        elif req.method == "REGISTER":
            self._register(server, uri, now_ms)
        elif req.method not in ALLOW.split(", "):
            self._answer(server, 501, extra=[("Allow", ALLOW)], now_ms=now_ms)  # RFC 4475 esc02
        else:
            self._answer(server, 404, now_ms=now_ms)

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

    # ------------------------------------------------------------------ waiting for the overlay

    def _ask(self, make: Callable[[int], OverlayRequest], then: Answer, server: _Server | None, now_ms: int,
             timeout_ms: int = OVERLAY_TIMEOUT_MS) -> bool:
        """Start an overlay request; `then` gets its outcome. False when too many requests wait
        already (the caller's request has been answered 503)."""
        source = _source_of(server.link) if server is not None else ""
        if server is not None:
            # A flood must not grow the waiting without end, nor one sender take all of it.
            if self._resolving >= RESOLVING_MAX or self._resolving_from[source] >= RESOLVING_PER_SOURCE_MAX:
                self._answer(server, 503, "Service Unavailable (busy)", [("Retry-After", str(RETRY_AFTER_S))],
                             now_ms=now_ms)
                return False
            self._resolving += 1
            self._resolving_from[source] += 1
        self._handles += 1
        wait = _Wait(self._handles, then, server.key if server else None, source, now_ms + timeout_ms)
        self._waits[wait.handle] = wait
        self._timers.set(wait, wait.deadline_ms)
        self._requests.append(make(wait.handle))
        return True

    def _storage_time_ms(self, now_ms: int) -> int:
        return now_ms + self._wall_offset_ms

    # ------------------------------------------------------------------ registrar (§10.3)

    def _register(self, server: _Server, uri: Uri, now_ms: int) -> None:
        req = server.request
        to = NameAddr.parse(req.get("to") or "")
        if to.uri.host != self.config.domain and not self._is_me(to.uri) and not self._is_me(uri):
            self._answer(server, 404, "Not Found (domain not served here)", now_ms=now_ms)
            return
        if to.uri.user is None:
            self._answer(server, 400, "Bad Request (To has no user)", now_ms=now_ms)
            return
        aor = f"sip:{to.uri.user}@{self.config.domain}"
        if self._auth is not None and not self._authenticated(server, aor, now_ms):
            return
        if self.config.tickets is not None and aor not in self.config.tickets:
            self.counters["refused.sip_not_named"] += 1
            self._answer(server, 403, "Forbidden (the overlay's authority did not name this node for it)",
                         now_ms=now_ms)
            return
        contacts = req.get_all("contact")
        default_expires = _int_or(req.get("expires"), EXPIRES_DEFAULT_S)
        bindings = self._bindings.live(aor, now_ms=now_ms)
        changes: list[Change] = []
        if contacts == ["*"]:
            if default_expires != 0:
                self._answer(server, 400, "Bad Request (* needs Expires: 0)", now_ms=now_ms)
                return
            changes = [(c, "", 0) for c in bindings]
        else:
            for text in contacts:
                contact = NameAddr.parse(text)
                expires = min(_int_or(contact.param("expires"), default_expires), EXPIRES_MAX_S)
                changes.append((str(contact.uri), _params_but_expires(contact), max(0, expires)))
            changes += _replaced_instances(bindings, changes)
        refusal = self._bindings.refusal(aor, [c for c, _, e in changes if e > 0], _source_of(server.link),
                                         now_ms=now_ms)
        if refusal is not None:
            self.counters[f"sip registrations refused: {refusal}"] += 1
            self._answer(server, 503, f"Service Unavailable ({refusal})", [("Retry-After", str(RETRY_AFTER_S))],
                         now_ms=now_ms)
            return
        stamp = self._storage_time_ms(now_ms)
        entries = tuple(self._registration(c, stamp, e, bindings.get(c), now_ms) for c, params, e in changes
                        if not self._fresh(bindings.get(c), params, e, server.link, now_ms))
        if not entries:
            self._bind(server, aor, changes, set(), stamp, now_ms)  # a query, or refreshes the overlay has fresh
            return
        if self._register_stores >= REGISTER_STORES_MAX and all(e for _, _, e in changes):
            self.counters["sip registrations stored behind"] += 1
            self._bind(server, aor, changes, set(), stamp, now_ms, unstored={e.key for e in entries})
            self._behind[aor] = None
            return

        def stored(_answer: FetchAns | None, error: Error | None, now_ms: int) -> None:
            self._register_stored(now_ms)
            if error is not None and error.code == ErrorCode.FORBIDDEN:  # the overlay's record has another owner
                log.warning("sip: registration of %s refused by the overlay: %s", aor, error.reason)
                self._answer(server, 403, f"Forbidden (the overlay refused it: {error.reason})", now_ms=now_ms)
                return
            if error is not None and not self._overtaken_by_ours(error, aor, changes, stamp, now_ms):
                log.warning("sip: registration of %s not stored: %s", aor, error.reason)
                self._answer(server, 503, "Service Unavailable (overlay did not store)", now_ms=now_ms)
                return
            self._bind(server, aor, changes, set() if error else {e.key for e in entries}, stamp, now_ms)

        if self._store_registrations(aor, entries, stored, server, now_ms):
            self._register_stores += 1

    def _authenticated(self, server: _Server, aor: str, now_ms: int, *, proxy: bool = False) -> bool:
        """The request's sender proved it is `aor`'s user (a REGISTER in Authorization; with
        `proxy`, a request it sends through us in Proxy-Authorization, RFC 3261 §22.3); else it
        has its answer (401 or 407 with a challenge, 403 for a wrong answer or a user we do
        not hold)."""
        assert self._auth is not None
        if aor not in self._auth.credentials:
            self.counters["refused.sip_user"] += 1
            self._answer(server, 403, "Forbidden (not a user of this front)", now_ms=now_ms)
            return False
        req = server.request
        authorization = _credentials_for(req, "proxy-authorization" if proxy else "authorization", self._auth.realm)
        verdict = self._auth.check(req.method, aor, authorization, _source_of(server.link), now_ms)
        if verdict is Verdict.OK:
            return True
        if verdict in (Verdict.CHALLENGE, Verdict.STALE):
            self.counters["sip.challenged"] += 1
            challenges = self._auth.challenges(now_ms, stale=verdict is Verdict.STALE, proxy=proxy)
            self._answer(server, 407 if proxy else 401, extra=challenges, now_ms=now_ms)
        elif verdict is Verdict.WRONG:
            self.counters["refused.sip_password"] += 1
            self._answer(server, 403, "Forbidden (wrong credentials)", now_ms=now_ms)
        else:
            self.counters["refused.sip_guessing"] += 1
            self._answer(server, 403, "Forbidden (too many wrong credentials from here: wait)", now_ms=now_ms)
        return False

    def _caller_proven(self, server: _Server | None, req: SipRequest, link: Link, now_ms: int) -> bool:
        """At a front with users nobody speaks as one of the domain's users but that user. A
        request from one comes from another front, which checked it there (through the
        overlay's tunnel, or over TLS whose far end proved a node the overlay admits), or
        proves itself as a REGISTER does, with the password of a user of ours. Else it has
        its answer (none when it came without a transaction: the table was full)."""
        if self._auth is None or link.transport == "TUNNEL" or (link.transport == "TLS" and link.node_id):
            return True
        caller = NameAddr.parse(req.get("from") or "").uri
        if caller.host != self.config.domain and not self._is_me(caller):
            return True  # nobody of ours to speak as: a gateway's caller, say
        if server is None:
            self.counters["sip dropped: caller not proven (transactions full)"] += 1
            return False
        if not self._authenticated(server, f"sip:{caller.user}@{self.config.domain}", now_ms, proxy=True):
            return False
        ours = _credentials_for(req, "proxy-authorization", self._auth.realm)
        req.headers = [h for h in req.headers if h[1] != ours or canonical(h[0]) != "proxy-authorization"]  # used
        return True

    def _registration(self, contact: str, stamp: int, expires_s: int, removed: Binding | None = None,
                      now_ms: int = 0) -> Entry:
        """The overlay's record of one binding of ours; when `expires_s` is 0, its removal,
        remembered until the `removed` record's signed lifetime ends (a replay of it loses
        until then, and is refused after), or as long as any could live when we do not know."""
        if not expires_s:
            left_ms = removed.stored_until_ms - now_ms if removed is not None and removed.stored_until_ms else None
            lifetime_s = REGISTRATION_LIFETIME_S_MAX if left_ms is None else max(1, -(-left_ms // 1000))
            return Entry(_contact_key(contact), b"", stamp, lifetime_s)
        record = Registration(contact, (self.config.advertise_host, self.config.port), self.config.node_id,
                              self._reachable, self.config.admitting, self.config.tls_port)
        return Entry(_contact_key(contact), record.to_bytes(), stamp, expires_s)

    def _store_registrations(self, aor: str, entries: tuple[Entry, ...], then: Answer, server: _Server | None,
                             now_ms: int) -> bool:
        return self._store_named(aor, Kind.SIP_REGISTRATION, entries, then, server, now_ms)

    def _store_named(self, name: str, kind: Kind, entries: tuple[Entry, ...], then: Answer,
                     server: _Server | None, now_ms: int, ticket_again: bool = True) -> bool:
        """Store `entries` of `kind` under `name`; in an enrolled overlay our ticket for it
        first, when the overlay may not have it (and once more when the storing peer says it
        has none)."""
        resource = id_from_name(name)
        tickets = self.config.tickets
        if tickets is None or self._tickets_until.get(name, 0) > now_ms:
            def stored(answer: FetchAns | None, error: Error | None, now_ms: int) -> None:
                if error is not None and error.reason == NOT_NAMED.reason and ticket_again:
                    self._tickets_until.pop(name, None)  # its holders lost it: store it again, then these
                    if self._store_named(name, kind, entries, then, None, now_ms, ticket_again=False):
                        return
                then(answer, error, now_ms)

            signer = self._owner_key(name) if kind == Kind.SIP_REGISTRATION else None
            return self._ask(partial(OverlayStore, resource=resource, kind=kind, model=MODEL_OF[kind],
                                     entries=entries, signer=signer), stored, server, now_ms)

        def ticket_stored(answer: FetchAns | None, error: Error | None, now_ms: int) -> None:
            if error is not None:
                log.warning("sip: ticket for %s not stored: %s", name, error.reason)
                then(answer, error, now_ms)
                return
            self._tickets_until[name] = now_ms + TICKET_LIFETIME_S * 500
            self._store_named(name, kind, entries, then, None, now_ms, ticket_again=False)

        entry = tickets[name].entry(self._storage_time_ms(now_ms), TICKET_LIFETIME_S)
        return self._ask(partial(OverlayStore, resource=resource, kind=Kind.NAME, model=MODEL_OF[Kind.NAME],
                                 entries=(entry,)), ticket_stored, server, now_ms)

    def _owner_key(self, aor: str) -> Signer | None:
        """Who signs what the overlay keeps for `aor`: in an enrolled overlay our node's key,
        which the authority's ticket names; else the user's key, which every front that holds
        the user's password derives alike; an open front (no users file) uses the open key
        anyone can derive, as anyone may register there."""
        if self.config.tickets is not None:
            return None
        return self._auth.user_key(aor) if self._auth is not None else open_key(aor)

    def _register_stored(self, now_ms: int) -> None:
        """A registration store finished: the window has room for bindings waiting behind."""
        self._register_stores -= 1
        while self._behind and self._register_stores < REGISTER_STORES_MAX:
            aor = next(iter(self._behind))
            del self._behind[aor]
            unstored = [b for b in self._bindings.live(aor, now_ms=now_ms).values() if not b.stored_until_ms]
            if unstored:
                self._store_behind(aor, unstored, now_ms)

    def _store_behind(self, aor: str, unstored: list[Binding], now_ms: int) -> None:
        stamp = self._storage_time_ms(now_ms)
        entries = tuple(self._registration(b.contact, stamp, max(1, (b.expires_at_ms - now_ms) // 1000))
                        for b in unstored)

        def stored(_answer: FetchAns | None, error: Error | None, now_ms: int) -> None:
            self._register_stored(now_ms)
            if error is not None:
                self.counters[f"sip bindings stored behind failed: {error.reason}"] += 1
                return  # the audit stores it again
            for b, entry in zip(unstored, entries):
                if not b.stored_until_ms:  # not replaced meanwhile by a REGISTER that waited for its store
                    b.stored_until_ms, b.stamp_ms = now_ms + entry.lifetime_s * 1000, stamp

        self._register_stores += 1
        self._store_registrations(aor, entries, stored, None, now_ms)

    def _fresh(self, binding: Binding | None, params: str, expires: int, came_from: Link, now_ms: int) -> bool:
        """A refresh the overlay need not hear of: the same binding, whose stored copy still has
        three quarters of the new lifetime to live (a phone refreshing often costs no store)."""
        return (binding is not None and expires > 0 and binding.params == params
                and binding.link == self._path_to(Uri.parse(binding.contact), came_from)
                and binding.stored_until_ms - now_ms >= expires * 750)

    def _overtaken_by_ours(self, error: Error, aor: str, changes: list[Change], stamp: int,
                           now_ms: int) -> bool:
        """A store refused as older than what is stored, because a later REGISTER of the same
        phone was stored here first (both were on their way): no failure. A newer copy that is
        not ours is one."""
        if error.code != ErrorCode.DATA_TOO_OLD:
            return False
        bindings = self._bindings.live(aor, now_ms=now_ms)
        return all(c in bindings and bindings[c].stamp_ms >= stamp for c, _, e in changes if e)

    def _bind(self, server: _Server, aor: str, changes: list[Change], stored: set[object],
              stamp: int, now_ms: int, unstored: frozenset[object] | set[object] = frozenset()) -> None:
        """Keep the changes here and answer 200; `stored` are the keys the overlay took, and
        `unstored` those still to be stored behind (their copy counts as lapsed)."""
        bindings = self._bindings.live(aor, now_ms=now_ms)
        new = False
        for uri_text, params, expires in changes:
            old = bindings.pop(uri_text, None)
            if not expires:
                self._bindings.remove(aor, uri_text)
                continue
            new = new or old is None
            key = _contact_key(uri_text)
            written = (old is None or key in stored) and key not in unstored
            binding = Binding(uri_text, params, self._path_to(Uri.parse(uri_text), server.link),
                              _source_of(server.link), now_ms + expires * 1000,
                              0 if key in unstored else
                              now_ms + expires * 1000 if written else old.stored_until_ms,  # type: ignore[union-attr]
                              stamp if old is None or written else old.stamp_ms,
                              now_ms if old is None else old.offline_checked_ms)
            self._bindings.put(aor, binding)
            bindings[uri_text] = binding
            if _AUDIT not in self._timers:
                self._timers.set(_AUDIT, now_ms + AUDIT_TICK_MS)
        current = [("Contact", f"<{b.contact}>{b.params};expires={max(0, (b.expires_at_ms - now_ms) // 1000)}")
                   for b in bindings.values()]
        date = formatdate(self._storage_time_ms(now_ms) / 1000, usegmt=True)
        self._answer(server, 200, extra=current + [("Date", date)], now_ms=now_ms)
        if changes:
            if new or not bindings:  # not every refresh: a busy front refreshes thousands a second
                log.info("sip: %s %s", aor, "registered" if bindings else "unregistered")
            self._events.append(Registered(aor, len(bindings)))
        # Messages kept for this AOR are looked for when it comes online here, and now and then
        # while it stays (one kept because its phone did not answer), not on every refresh.
        due = [b for b in bindings.values() if b.offline_checked_ms <= now_ms - OFFLINE_RECHECK_MS]
        if (new or due) and aor not in self._delivering:
            for b in bindings.values():
                b.offline_checked_ms = now_ms
            self._deliver_offline(aor, now_ms)

    @property
    def _reachable(self) -> bool:
        return self.config.reachable and self.config.admitting is None

    def reached_through(self, peer_id: int | None, *, now_ms: int) -> None:
        """Our node became a client attached to `peer_id` (None: a peer again): our phones'
        records in the overlay say so at once, so calls take the new path."""
        if peer_id == self.config.admitting:
            return
        self.config.admitting = peer_id
        self._store_all_again(now_ms)

    def moved(self, host: str, *, now_ms: int) -> None:
        """The device has a new address (a new network, a new lease): our Record-Routes, Vias
        and phones' records name it from now on. The old one is still ours for the routes of
        dialogs recorded before (their requests find us again by AOR, `_reroute_in_dialog`); the
        one before it is forgotten, as someone else may have it by now."""
        if host == self.config.advertise_host:
            return
        self._my_hosts = {self.config.advertise_host.lower(), host.lower(), LOOPBACK, "localhost"}
        self.config.advertise_host = host
        self._store_all_again(now_ms)

    def _store_all_again(self, now_ms: int) -> None:
        for aor in self._bindings.aors():
            bindings = list(self._bindings.live(aor, now_ms=now_ms).values())
            if bindings:
                self.counters["sip registrations stored on a new path"] += len(bindings)
                self._store_behind(aor, bindings, now_ms)

    def overlay_changed(self, *, now_ms: int) -> None:
        """A node of the overlay failed: our phones' records may have gone with it."""
        if self._audit_cycle_ms - AUDIT_CYCLE_MS + AUDIT_SOON_MS > now_ms or not len(self._bindings):
            return  # a round started a moment ago
        self._audit_queue.clear()
        self._audit_cycle_ms = now_ms
        self._timers.set(_AUDIT, now_ms)

    def _audit(self, now_ms: int) -> None:
        """Look at the overlay's copies of the next few AORs registered here (all of them once
        per AUDIT_CYCLE_MS) and store again what has gone missing."""
        if not self._audit_queue and now_ms >= self._audit_cycle_ms:
            self._audit_queue.extend(self._bindings.aors())
            ticks = AUDIT_CYCLE_MS // AUDIT_TICK_MS
            self._audit_per_tick = min(AUDITS_PER_TICK_MAX, -(-len(self._audit_queue) // ticks))
            self._audit_cycle_ms = now_ms + AUDIT_CYCLE_MS
        busy = self._resolving > RESOLVING_MAX // 4
        for _ in range(0 if busy else min(self._audit_per_tick, len(self._audit_queue))):
            aor = self._audit_queue.popleft()
            if aor not in self._behind and self._bindings.live(aor, now_ms=now_ms):
                self._audit_one(aor, now_ms)
        if len(self._bindings):  # the next few AORs in a second; with none left, the next round
            self._timers.set(_AUDIT, now_ms + AUDIT_TICK_MS if self._audit_queue
                             else max(now_ms + AUDIT_TICK_MS, self._audit_cycle_ms))

    def _audit_one(self, aor: str, now_ms: int) -> None:
        resource = id_from_name(aor)

        def fetched(answer: FetchAns | None, _error: Error | None, now_ms: int) -> None:
            if answer is None:
                return  # asked again next cycle
            held = {e.key for e in answer.entries}
            stamp = self._storage_time_ms(now_ms)
            lost = [b for b in self._bindings.live(aor, now_ms=now_ms).values()
                    if _contact_key(b.contact) not in held]
            if not lost:
                return
            self.counters["sip bindings stored again (the overlay had lost them)"] += len(lost)
            entries = tuple(self._registration(b.contact, stamp, max(1, (b.expires_at_ms - now_ms) // 1000))
                            for b in lost)
            self._store_registrations(aor, entries, partial(self._logged, f"registration of {aor} not stored again"),
                                      None, now_ms)

        self._ask(lambda h: OverlayFetch(h, resource, Kind.SIP_REGISTRATION), fetched, None, now_ms)

    def _path_to(self, contact: Uri, came_from: Link) -> Link:
        """How to reach a registered UA: its TCP or TLS connection, its contact, or (behind NAT, where the
        contact names an address we did not hear it from) where its REGISTER came from."""
        if came_from.transport in STREAMS:
            return came_from
        if contact.host == came_from.addr[0]:
            return self._link_to(contact)
        return came_from

    # ------------------------------------------------------------------ location and routing (§16.5)

    def _to_aor(self, server: _Server | None, req: SipRequest, link: Link, aor: str, now_ms: int,
                attempt: int = 1, avoid: Link | None = None) -> None:
        binding = self._bindings.best(aor, now_ms=now_ms)
        if binding is not None:
            req.uri = binding.contact
            self._forward(server, req, link, binding.link, now_ms)
            return

        def found(answer: FetchAns | None, error: Error | None, now_ms: int) -> None:
            if answer is None:
                self.counters[f"sip lookup failed: {error.reason if error else 'no answer'}"] += 1
                if attempt < LOOKUP_ATTEMPTS and (server is None or not server.txn.terminated):
                    self._to_aor(server, req, link, aor, now_ms, attempt + 1, avoid)  # under churn, often a stale route
                    return
                log.info("sip: lookup of %s failed: %s", aor, error.reason if error else "no answer")
                self._answer_if(server, 480, "Temporarily Unavailable (overlay lookup failed)", now_ms)
                return
            records = []
            for entry in answer.entries:
                try:
                    records.append((entry.storage_time_ms, Registration.from_bytes(entry.value)))
                except RecordError:
                    self.counters["sip bad registration records"] += 1
            records = [r for r in records if r[1].node_id != self.config.node_id]  # ours would be bound above
            if not records:
                if req.method == "MESSAGE" and server is not None:
                    self._keep_offline(server, aor, now_ms)
                else:
                    self._answer_if(server, 404, "Not Found (not registered)" if not answer.entries else
                                    "Not Found (registration ended here)", now_ms)
                return
            # Newest first; the others are tried in turn if it does not answer (serial forking,
            # §16.6): a phone registered through two fronts stays reachable while one lives.
            targets: list[Link] = []
            for _, record in sorted(records, key=lambda r: -r[0]):
                target = self._front_link(record)
                if target not in targets and target != avoid:
                    targets.append(target)
            req.uri = aor  # the serving front knows the AOR, not our own address it may have been sent to
            if server is not None:
                server.alternatives = targets[1:FORKS_MAX]
            self._forward(server, req, link, targets[0], now_ms)

        resource = id_from_name(aor)
        self._fetch_named(resource, Kind.SIP_REGISTRATION, found, server, now_ms,
                          LOOKUP_FIRST_TIMEOUT_MS if attempt == 1 else OVERLAY_TIMEOUT_MS)

    def _fetch_named(self, resource: int, kind: Kind, then: Answer, server: _Server | None, now_ms: int,
                     timeout_ms: int = OVERLAY_TIMEOUT_MS) -> None:
        """Fetch the records of a name; in an enrolled overlay, only those a key the name's
        tickets name sealed. The tickets are asked for at the same time as the records, so an
        enrolled lookup waits for one round trip, not two."""
        if self.config.tickets is None:
            self._ask(lambda h: OverlayFetch(h, resource, kind), then, server, now_ms, timeout_ms)
            return
        answers: dict[Kind, FetchAns] = {}
        ended = False

        def got(which: Kind, answer: FetchAns | None, error: Error | None, now_ms: int) -> None:
            nonlocal ended
            if ended:
                return
            if answer is None or (which is kind and not answer.entries):  # nothing to sift: the outcome
                ended = True
                then(answer, error, now_ms)
                return
            answers[which] = answer
            if len(answers) == 2:
                ended = True
                self._named_only(answers[kind], answers[Kind.NAME], then, now_ms)

        if self._ask(lambda h: OverlayFetch(h, resource, kind), partial(got, kind), server, now_ms, timeout_ms):
            self._ask(lambda h: OverlayFetch(h, resource, Kind.NAME), partial(got, Kind.NAME), server, now_ms,
                      timeout_ms)

    def _named_only(self, answer: FetchAns, tickets: FetchAns, then: Answer, now_ms: int) -> None:
        """The records fetched, less those no ticket stored under the same name names (the
        node checked each ticket's signature as it fetched them). None left of some: a storing
        peer passing off its own, and the lookup fails."""
        keys = {e.seal.signer for e in tickets.entries if e.seal is not None}
        believed = tuple(e for e in answer.entries if e.seal is not None and e.seal.signer in keys)
        if len(believed) < len(answer.entries):
            self.counters["refused.sip_unnamed_record"] += len(answer.entries) - len(believed)
        if not believed:
            then(None, Error(ErrorCode.FORBIDDEN, NOT_NAMED.reason), now_ms)
            return
        then(replace(answer, entries=believed), None, now_ms)

    def _to_gateway(self, server: _Server | None, req: SipRequest, link: Link, domain: str, now_ms: int) -> None:
        """A foreign domain: to a peer that gateways to it, found in the overlay (seed 002, §3.4)."""

        def found(answer: FetchAns | None, error: Error | None, now_ms: int) -> None:
            fronts = []
            for entry in answer.entries if answer is not None else ():
                try:
                    fronts.append(Registration.from_bytes(entry.value))
                except RecordError:
                    self.counters["sip bad gateway records"] += 1
            if not fronts:
                self._answer_if(server, 404, "Not Found (no gateway to that domain)", now_ms)
                return
            self._forward(server, req, link, self._front_link(fronts[0]), now_ms)

        self._fetch_named(id_from_name(gateway_name(domain)), Kind.GATEWAY, found, server, now_ms)

    def _advertise_gateways(self, now_ms: int) -> None:
        """Keep "this peer gateways to DOMAIN" in the overlay while it runs."""
        me = Registration("sip:gateway", (self.config.advertise_host, self.config.port), self.config.node_id,
                          tls_port=self.config.tls_port)
        entry = Entry(self.config.node_id.to_bytes(20, "big"), me.to_bytes(), self._storage_time_ms(now_ms),
                      GATEWAY_LIFETIME_S)

        for domain in self.config.gateways:
            name = gateway_name(domain)
            if self.config.tickets is not None and name not in self.config.tickets:
                log.warning("sip: gateway to %s not advertised: the overlay's authority did not name this node "
                            "for it (peerphone ca issue --gateway %s)", domain, domain)
                continue
            self._store_named(name, Kind.GATEWAY, (entry,),
                              partial(self._logged, f"gateway to {domain} not advertised"), None, now_ms)
        self._timers.set(_GATEWAYS, now_ms + GATEWAY_LIFETIME_S * 1000 // 3)

    @staticmethod
    def _logged(what: str, _answer: FetchAns | None, error: Error | None, _now_ms: int) -> None:
        if error is not None:
            log.warning("sip: %s: %s", what, error.reason)

    def _front_link(self, record: Registration) -> Link:
        """How to send to the front of a registration: over TLS to a front that listens for it
        (it must prove to be the record's node: SDP's SRTP keys cross between fronts), else
        over UDP, or through the overlay to a front that cannot be reached."""
        if not record.reachable:
            return Link("TUNNEL", record.front, record.node_id, record.via)
        if record.tls_port and self.config.tls_port:
            return Link("TLS", (record.front[0], record.tls_port), record.node_id)
        return Link("UDP", record.front)

    def _link_to(self, uri: Uri) -> Link:
        transport = (uri.param("transport") or "").lower()
        node = id_from_hex(uri.param(TUNNEL_PARAM))  # a front's Record-Route: the node it runs on
        addr = (uri.host, uri.port_or_default)
        if transport == "tls":
            return Link("TLS", addr, node or 0)
        if node is not None:  # a front that is reached through the overlay
            return Link("TUNNEL", addr, node, id_from_hex(uri.param(VIA_PARAM)))
        return Link("TCP" if transport == "tcp" else "UDP", addr)

    def _port_for(self, link: Link) -> int:
        return self.config.tls_port if link.transport == "TLS" else self.config.port

    def _is_me(self, uri: Uri) -> bool:
        return uri.host in self._my_hosts and uri.port_or_default in self._my_ports

    @property
    def _my_ports(self) -> tuple[int, ...]:
        return (self.config.port, self.config.tls_port) if self.config.tls_port else (self.config.port,)

    # ------------------------------------------------------------------ forwarding (§16.6)

    def _forward(self, server: _Server | None, req: SipRequest, upstream: Link, downstream: Link,
                 now_ms: int) -> None:
        hops = req.max_forwards()
        if hops == 0:
            self._answer_if(server, 483, None, now_ms)
            return
        vias = req.get_all("via")
        loop_hash = _digest(req.uri, _tag(req.get("from")), _tag(req.get("to")), req.get("call-id") or "",
                            str(req.cseq()[0]), *req.get_all("route"))[:16]
        for text in vias:
            via = Via.parse(text)
            if via.host in self._my_hosts and via.port in self._my_ports \
                    and (via.branch or "").endswith("." + loop_hash):
                self._answer_if(server, 482, None, now_ms)
                return
        # Stateless requests (an ACK to a 2xx) get the same branch on every retransmission (§16.11);
        # each further branch of a forked request its own.
        fork = "" if server is None or not server.forks else f".{server.forks}"
        branch = f"{MAGIC}{_digest(_their_branch(req), str(self.config.node_id) + fork)[:12]}.{loop_hash}"
        out = SipRequest(method=req.method, uri=req.uri, headers=list(req.headers), body=req.body)
        _set(out, "max-forwards", str(hops - 1))
        out.headers.insert(0, ("Via", self._via(downstream, branch)))
        if req.method in DIALOG_CREATING and _tag(req.get("to")) == "":
            # Between our own phone on loopback and the network, and between TLS and the other
            # transports, a route for each side (RFC 5658): the phone's stays 127.0.0.1 when the
            # device's address changes mid-call, and a phone on UDP is not asked to speak TLS.
            tcp = "TCP" in (upstream.transport, downstream.transport)
            token = f";{ROUTE_TOKEN_PARAM}={self._route_token(req)}"
            for route in dict.fromkeys(self._recorded_route(side, tcp, token) for side in (upstream, downstream)):
                out.headers.insert(1, ("Record-Route", route))
        data = out.to_bytes()
        if server is None:
            self._send(data, downstream)
            return
        server.forks += 1
        server.client = self._send_request(out, data, downstream, branch, server, None, now_ms)
        self._events.append(Forwarded(req.method, req.get("call-id") or "", downstream))

    def _recorded_route(self, side: Link, tcp: bool, token: str) -> str:
        """Our Record-Route as the far end of `side` will use it."""
        host = self._facing(side)
        if side.transport == "TLS" and (self._reachable or not side.node_id):  # not a front behind NAT
            # and the node we run on, which the far end checks we are
            return f"<sip:{host}:{self.config.tls_port};transport=tls;{TUNNEL_PARAM}={self.config.node_id:x}{token};lr>"
        params = ";transport=tcp" if tcp else ""
        if host == self.config.advertise_host:
            if not self._reachable:
                params += f";{TUNNEL_PARAM}={self.config.node_id:x}"
            if self.config.admitting is not None:
                params += f";{VIA_PARAM}={self.config.admitting:x}"
        return f"<sip:{host}:{self.config.port}{params}{token};lr>"

    def _fork(self, server: _Server, now_ms: int) -> bool:
        """Try the callee's next front, if there is one and the request is still open."""
        if not server.alternatives or server.answered_here or server.txn.state not in (State.TRYING,
                                                                                         State.PROCEEDING):
            return False
        self.counters["sip forked to another front"] += 1
        self._forward(server, server.request, server.link, server.alternatives.pop(0), now_ms)
        return True

    def _send_request(self, req: SipRequest, data: bytes, link: Link, branch: str, server: _Server | None,
                      on_final: Callable[[int, int], None] | None, now_ms: int) -> _Client:
        kind = TxKind.INVITE_CLIENT if req.method == "INVITE" else TxKind.NON_INVITE_CLIENT
        client = _Client((branch, req.method), req, data, link,
                         Transaction.start(kind, reliable=link.reliable, now_ms=now_ms), server, on_final)
        client.tu_deadline_ms = now_ms + self.config.reach_timeout_ms
        self._clients[client.key] = client
        self._send(data, link)
        self._schedule(client)
        return client

    def _facing(self, link: Link) -> str:
        """Our address as seen across `link`: loopback's to a phone on this machine."""
        return LOOPBACK if link.transport != "TUNNEL" and link.addr[0].startswith("127.") \
            and not self.config.advertise_host.startswith("127.") else self.config.advertise_host

    def _via(self, link: Link, branch: str) -> str:
        return f"SIP/2.0/{link.via_transport} {self._facing(link)}:{self._port_for(link)};branch={branch}"

    def _cancel(self, server: _Server, invite: _Server | None, now_ms: int) -> None:
        """CANCEL (§16.10): answered here, and sent on along the INVITE's branch if it is still open."""
        if invite is None:
            self._answer(server, 481, now_ms=now_ms)
            return
        self._answer(server, 200, now_ms=now_ms)
        client = invite.client
        if client is not None and client.txn.state in (State.CALLING, State.PROCEEDING) and not client.cancelled:
            self._cancel_branch(client, now_ms)

    # ------------------------------------------------------------------ client transactions

    def _on_response(self, resp: SipResponse, now_ms: int) -> None:
        vias = resp.get_all("via")
        if not vias:
            raise SipParseError("response without Via")
        top = Via.parse(vias[0])
        if top.host not in self._my_hosts or top.port not in self._my_ports:
            self.counters["sip dropped: response not for us"] += 1
            return
        _drop_first(resp, "via")
        self.counters[f"sip response {resp.status // 100}xx"] += 1
        _, method = resp.cseq()
        client = self._clients.get((top.branch or "", method))
        if client is None:
            if len(vias) > 1:  # a late answer (a 2xx retransmission): routed by its Via (§16.7 step 10)
                nxt = Via.parse(vias[1])
                self._send(resp.to_bytes(), Link(nxt.transport if nxt.transport in STREAMS else "UDP",
                                                 nxt.reply_to()))
            return
        self._client_input(client, response_input(resp.status), resp, now_ms)

    def _client_input(self, client: _Client, event: Input, resp: SipResponse | None, now_ms: int) -> None:
        if resp is not None:
            client.heard = True
            if resp.status >= 200 or client.request.method != "INVITE":
                client.tu_deadline_ms = None
            elif client.request.method == "INVITE":
                client.tu_deadline_ms = now_ms + TIMER_C_MS  # §16.6 step 11, restarted by each provisional
        self._client_actions(client, client.txn.fire(event, now_ms=now_ms), resp, now_ms)

    def _client_timer(self, client: _Client, now_ms: int) -> None:
        if client.tu_deadline_ms is not None and client.tu_deadline_ms <= now_ms:
            client.tu_deadline_ms = None
            self._branch_gave_up(client, now_ms)
        if self._clients.get(client.key) is client:
            self._client_actions(client, client.txn.expire(now_ms=now_ms), None, now_ms)

    def _server_timer(self, server: _Server, now_ms: int) -> None:
        if server.tu_deadline_ms is not None and server.tu_deadline_ms <= now_ms:
            server.tu_deadline_ms = None
            if server.txn.state in (State.TRYING, State.PROCEEDING):
                self.counters["sip requests given up"] += 1
                self._answer(server, 408, now_ms=now_ms)
        if self._servers.get(server.key) is server:
            self._server_actions(server, server.txn.expire(now_ms=now_ms), b"")

    def _client_actions(self, client: _Client, actions: tuple[Action, ...], resp: SipResponse | None,
                        now_ms: int) -> None:
        for action in actions:
            if action is Action.RESEND_REQUEST:
                self._send(client.sent, client.link)
            elif action is Action.SEND_ACK and resp is not None:
                self._send(ack_for_failure(client.request, resp), client.link)
            elif action is Action.PASS_UP and resp is not None:
                self._relay(client, resp, now_ms)
            elif action in (Action.TIMED_OUT, Action.TRANSPORT_FAILED):
                self._branch_gave_up(client, now_ms)
        self._schedule(client)

    def _branch_gave_up(self, client: _Client, now_ms: int) -> None:
        """The branch failed: no answer at all (480, or the MESSAGE kept offline), or no final one
        (Timer C, §16.8: CANCEL it, 408 upstream, and forget it 64*T1 later if it stays silent)."""
        if client.on_final is not None:
            on_final, client.on_final = client.on_final, None
            on_final(408, now_ms)
        if client.heard and client.request.method == "INVITE" and client.txn.state is State.PROCEEDING \
                and not client.cancelled:
            self._cancel_branch(client, now_ms)
            client.tu_deadline_ms = now_ms + 64 * T1_MS
        else:
            self._end(client)
        server = client.server
        if server is None or server.client is not client or server.answered_here \
                or server.txn.state not in (State.TRYING, State.PROCEEDING):
            return
        if not client.heard and (self._fork(server, now_ms) or self._reroute_in_dialog(server, client.link, now_ms)):
            return
        aor = self._aor_of(server.request)
        if server.request.method == "MESSAGE" and not client.heard and aor is not None:
            server.answered_here = True
            self._keep_offline(server, aor, now_ms)
            return
        self._answer(server, 408 if client.heard else 480,
                     None if client.heard else "Temporarily Unavailable (callee not reachable)", now_ms=now_ms)

    def _reroute_in_dialog(self, server: _Server, dead: Link, now_ms: int) -> bool:
        """A request inside a dialog whose recorded next hop is silent (a front that died
        mid-call): find the far end again by its AOR, through whichever of its fronts lives.
        A dialog's route is fixed in RFC 3261; an overlay of fronts has another way round."""
        req = server.request
        to = NameAddr.parse(req.get("to") or "").uri
        if server.rerouted or _tag(req.get("to")) == "" or to.host != self.config.domain or to.user is None:
            return False
        server.rerouted = True
        self.counters["sip in-dialog requests rerouted by AOR"] += 1
        for _ in req.get_all("route"):
            _drop_first(req, "route")
        self._to_aor(server, req, server.link, f"sip:{to.user}@{self.config.domain}", now_ms, avoid=dead)
        return True

    def _cancel_branch(self, client: _Client, now_ms: int) -> None:
        """CANCEL an INVITE we sent (§9.1): its Request-URI, Call-ID, From, To, CSeq number,
        top Via and Route."""
        client.cancelled = True
        if (client.key[0], "CANCEL") in self._clients:
            return
        original = client.request
        cancel = SipRequest(method="CANCEL", uri=original.uri, body=b"", headers=[
            ("Via", self._via(client.link, client.key[0])), ("Max-Forwards", "70"),
            ("From", original.get("from") or ""), ("To", original.get("to") or ""),
            ("Call-ID", original.get("call-id") or ""), ("CSeq", f"{original.cseq()[0]} CANCEL"),
            *[("Route", r) for r in original.get_all("route")]])
        self._send_request(cancel, cancel.to_bytes(), client.link, client.key[0], None, None, now_ms)

    def _relay(self, client: _Client, resp: SipResponse, now_ms: int) -> None:
        """A response from downstream, to whoever asked (§16.7)."""
        if client.on_final is not None:
            if resp.status >= 200:
                on_final, client.on_final = client.on_final, None
                on_final(resp.status, now_ms)
            return
        server = client.server
        if server is None or resp.status == 100:
            return  # our own CANCEL's answer; or a 100, which we sent ourselves
        if resp.status >= 300 and resp.status < 600 and server.client is client and self._fork(server, now_ms):
            return  # this front of the callee could not reach it: the next one may
        data = resp.to_bytes()
        if server.answered_here or server.txn.terminated:
            if client.request.method == "INVITE" and 200 <= resp.status < 300:
                self._send(data, server.link)  # a 2xx still goes through: the call is up downstream
            return
        self._server_actions(server, server.txn.fire(response_input(resp.status), now_ms=now_ms), data)

    def _end(self, item: _Server | _Client) -> None:
        table: dict[tuple[str, str], _Server] | dict[tuple[str, str], _Client] = \
            self._servers if isinstance(item, _Server) else self._clients
        if table.get(item.key) is item:
            del table[item.key]
        self._timers.discard(item)

    def _schedule(self, item: _Server | _Client) -> None:
        """File `item` under its next deadline, or end it once its transaction has."""
        if item.txn.terminated:
            self._end(item)
            return
        deadlines = [d for d in (item.txn.next_deadline_ms(), item.tu_deadline_ms) if d is not None]
        if deadlines:
            self._timers.set(item, min(deadlines))
        else:
            self._timers.discard(item)

    # ------------------------------------------------------------------ server transactions

    def _answer(self, server: _Server, status: int, reason: str | None = None,
                extra: list[tuple[str, str]] | None = None, *, now_ms: int) -> None:
        """Answer `server`'s request ourselves (§8.2.6) through its transaction."""
        if status >= 200:
            server.answered_here = True
        data = self._response_bytes(server.request, status, reason, extra)
        try:
            actions = server.txn.fire(response_input(status), now_ms=now_ms)
        except TransactionError:
            return  # answered already (a late overlay answer after Timer H, say)
        self._server_actions(server, actions, data)

    def _answer_if(self, server: _Server | None, status: int, reason: str | None, now_ms: int) -> None:
        if server is not None and not server.txn.terminated:
            self._answer(server, status, reason, now_ms=now_ms)

    def _server_actions(self, server: _Server, actions: tuple[Action, ...], data: bytes) -> None:
        for action in actions:
            if action is Action.SEND_RESPONSE:
                server.last = data
                self._send(data, server.link)
            elif action is Action.RESEND_RESPONSE and server.last:
                self._send(server.last, server.link)
        if server.txn.state not in (State.TRYING, State.PROCEEDING):
            if server.answered_here and server.request.method in STATELESS_ONCE_ANSWERED:
                # As a stateless UAS (§8.2.7): a retransmission is served again, which for these
                # is idempotent, instead of 32 s of state for each at 2,000/s.
                if server.raw and server.last:
                    self._recent_answers.put(server.raw, (server.link, server.last))
                self._end(server)
                return
            # Answered: from here it only repeats its answer (Timers G, J) or waits for the ACK,
            # for up to 32 s. It lets its request go (most of the 4 KiB it holds).
            server.tu_deadline_ms = None
            server.request = _ANSWERED
            server.client = None
            server.alternatives = []
        self._schedule(server)

    def _respond_stateless(self, req: SipRequest, link: Link, status: int, reason: str | None = None,
                           extra: list[tuple[str, str]] | None = None) -> None:
        self._send(self._response_bytes(req, status, reason, extra), link)

    def _response_bytes(self, req: SipRequest, status: int, reason: str | None,
                        extra: list[tuple[str, str]] | None) -> bytes:
        """Via, From, To (with our tag), Call-ID and CSeq of `req` (§8.2.6)."""
        resp = SipResponse(status=status, reason=reason or REASONS.get(status, "Unknown"))
        for name in ("via", "from", "to", "call-id", "cseq"):
            for n, v in req.headers:
                if canonical(n) == name:
                    if name == "to" and status > 100 and ";tag=" not in v.replace(" ", ""):
                        v = f"{v};tag={_digest(req.get('call-id') or '', self.config.advertise_host)[:10]}"
                    resp.headers.append((n, v))
        resp.headers += [("Server", "peerphone"), *(extra or [])]
        return resp.to_bytes()

    def _send(self, data: bytes, link: Link) -> None:
        if link.transport != "TUNNEL":
            self._out.append((data, link))
            return
        self.counters["sip tunnelled out"] += 1
        for part in tunnel.split(data, self._entropy(tunnel.MESSAGE_ID_BYTES)):
            def failed(_answer: FetchAns | None, error: Error | None, now_ms: int) -> None:
                if error is not None:
                    log.info("sip: tunnel to %x failed: %s", link.node_id, error.reason)
                    self.transport_failed(link, now_ms=now_ms)

            self._handles += 1
            wait = _Wait(self._handles, failed, None, "", 0)
            self._waits[wait.handle] = wait  # no deadline of ours: the overlay's transaction ends it
            self._requests.append(OverlayTunnel(wait.handle, link.node_id, part, link.via))

    # ------------------------------------------------------------------ offline messages (seed 000)

    def _aor_of(self, req: SipRequest) -> str | None:
        try:
            to = NameAddr.parse(req.get("to") or "").uri
        except SipParseError:
            return None
        return f"sip:{to.user}@{self.config.domain}" if to.user else None

    def _keep_offline(self, server: _Server, aor: str, now_ms: int) -> None:
        """Append the MESSAGE under `aor` and answer 202, or 480 if it cannot be kept."""
        req = server.request
        sender = str(NameAddr.parse(req.get("from") or "").uri)
        try:
            record = OfflineMessage(sender, req.get("content-type") or "text/plain",
                                    req.body.decode("utf-8", "replace")).to_bytes()
        except RecordError as e:
            self._answer_if(server, 480, f"Temporarily Unavailable ({e})", now_ms)
            return
        entry = Entry(ARRAY_APPEND, record, self._storage_time_ms(now_ms), OFFLINE_LIFETIME_S)

        def kept(_answer: FetchAns | None, error: Error | None, now_ms: int) -> None:
            if error is not None:
                log.warning("sip: offline message for %s not kept: %s", aor, error.reason)
                self._answer_if(server, 480, "Temporarily Unavailable (could not keep the message)", now_ms)
                return
            self.counters["sip messages kept offline"] += 1
            self._events.append(KeptOffline(aor))
            log.info("sip: kept a message for %s until it registers", aor)
            self._answer_if(server, 202, "Accepted (kept until the recipient registers)", now_ms)

        resource = id_from_name(aor)
        self._ask(lambda h: OverlayStore(h, resource, Kind.OFFLINE_MESSAGE, MODEL_OF[Kind.OFFLINE_MESSAGE],
                                         (entry,)), kept, None, now_ms)

    def _deliver_offline(self, aor: str, now_ms: int) -> None:
        """Fetch what was kept for `aor` and send it, one MESSAGE after the other, removing each
        once its UA has taken it."""
        resource = id_from_name(aor)
        self._delivering.add(aor)

        def fetched(answer: FetchAns | None, error: Error | None, now_ms: int) -> None:
            if answer is None:
                self._delivering.discard(aor)
                log.info("sip: offline messages of %s not fetched: %s", aor, error.reason if error else "")
                return
            kept = sorted((e for e in answer.entries if isinstance(e.key, int)), key=lambda e: e.key)  # type: ignore[arg-type, return-value]
            self._deliver_next(aor, resource, kept, now_ms)

        self._ask(lambda h: OverlayFetch(h, resource, Kind.OFFLINE_MESSAGE), fetched, None, now_ms)

    def _deliver_next(self, aor: str, resource: int, kept: list[Entry], now_ms: int) -> None:
        binding = self._bindings.best(aor, now_ms=now_ms)
        while kept and binding is not None:
            entry = kept.pop(0)
            try:
                message = OfflineMessage.from_bytes(entry.value)
            except RecordError:
                self.counters["sip bad offline records"] += 1
                continue

            def delivered(status: int, now_ms: int, entry: Entry = entry) -> None:
                if 200 <= status < 300:
                    done = Entry(entry.key, b"", self._storage_time_ms(now_ms), OFFLINE_LIFETIME_S)
                    self._ask(partial(OverlayStore, resource=resource, kind=Kind.OFFLINE_MESSAGE,
                                      model=MODEL_OF[Kind.OFFLINE_MESSAGE], entries=(done,),
                                      signer=self._owner_key(aor)),
                              partial(self._logged, f"delivered message of {aor} not removed"), None, now_ms)
                    self.counters["sip offline messages delivered"] += 1
                    self._events.append(DeliveredOffline(aor))
                self._deliver_next(aor, resource, kept, now_ms)

            self._send_message(binding, aor, message, delivered, now_ms)
            return
        self._delivering.discard(aor)

    def _send_message(self, binding: Binding, aor: str, message: OfflineMessage,
                      on_final: Callable[[int, int], None], now_ms: int) -> None:
        """Send a kept MESSAGE to the UA ourselves (a UAC transaction, §17.1.2)."""
        branch = f"{MAGIC}{self._entropy(8).hex()}"
        req = SipRequest(method="MESSAGE", uri=binding.contact, body=message.text.encode(), headers=[
            ("Via", self._via(binding.link, branch)), ("Max-Forwards", "70"),
            ("From", f"<{message.sender}>;tag={self._entropy(5).hex()}"), ("To", f"<{aor}>"),
            ("Call-ID", f"{self._entropy(8).hex()}@{self.config.advertise_host}"), ("CSeq", "1 MESSAGE"),
            ("Content-Type", message.content_type)])
        self._send_request(req, req.to_bytes(), binding.link, branch, None, on_final, now_ms)


def ack_for_failure(request: SipRequest, resp: SipResponse) -> bytes:
    """The ACK an INVITE client transaction sends for a failure (§17.1.1.3)."""
    ack = SipRequest(method="ACK", uri=request.uri, body=b"", headers=[
        ("Via", request.get_all("via")[0]), ("Max-Forwards", "70"),
        ("From", request.get("from") or ""), ("To", resp.get("to") or ""),
        ("Call-ID", request.get("call-id") or ""), ("CSeq", f"{request.cseq()[0]} ACK"),
        *[("Route", r) for r in request.get_all("route")]])
    return ack.to_bytes()


def _source_of(link: Link) -> str:
    """Who a registration is counted against: the sending host, or the node a tunnel came from."""
    return f"node {link.node_id:x}" if link.transport == "TUNNEL" else link.addr[0]


def _replaced_instances(bindings: dict[str, Binding], changes: list[Change]) -> list[Change]:
    """RFC 5626 §6: a phone (one instance and reg-id) registering from a new contact drops
    the binding it had; the overlay's copy of that goes too."""
    instances = {instance_of(params) for _, params, e in changes if e > 0 and "+sip.instance" in params.lower()} - {""}
    if not instances:
        return []
    named = {c for c, _, _ in changes}
    return [(b.contact, "", 0) for b in bindings.values() if b.instance in instances and b.contact not in named]


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


def _params_but_expires(contact: NameAddr) -> str:
    return "".join(f";{k}" if v is None else f";{k}={_quoted(v)}" for k, v in contact.params if k != "expires")


def _quoted(value: str) -> str:
    return value if value and all(c.isalnum() or c in "-.!%*_+`'~:" for c in value) else f'"{value}"'


def _int_or(text: str | None, default: int) -> int:
    text = (text or "").strip()
    return int(text) if text.isdigit() and len(text) <= 10 else default


def gateway_name(domain: str) -> str:
    """The name a gateway to `domain` is kept under (and, in an enrolled overlay, the name the
    authority's ticket gives a node that may be one: `peerphone ca issue --gateway`)."""
    return f"sip-gateway:{domain}"


def _contact_key(contact: str) -> bytes:
    """A contact's entry under its AOR: the newest front it registered through replaces the
    others (a phone that moves leaves no record behind). A phone at two fronts gives each a
    contact of its own (the handset's accounts do), so it has two records and loses one
    with a front, not both."""
    return hashlib.sha1(contact.encode()).digest()


def _is_address(host: str) -> bool:
    return host.replace(".", "").isdigit() or host.startswith("[")


def _set(msg: SipRequest, name: str, value: str) -> None:
    msg.headers = [(n, v) for n, v in msg.headers if n.lower() != name] + [(name.title(), value)]


def _credentials_for(req: SipRequest, name: str, realm: str) -> str | None:
    """The `name` header (Authorization or Proxy-Authorization) for `realm`, else the first:
    a request may carry credentials for the proxies after us too (RFC 3261 §22.3)."""
    values = [value for header, value in req.headers if canonical(header) == name]
    return next((v for v in values if (parse_digest(v) or {}).get("realm") == realm), values[0] if values else None)


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
