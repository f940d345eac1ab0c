"""PeerNode: the one facade the drivers use (the UDP driver, the simulator, the tests),
and what every topology shares beneath it.

Sans-I/O in the manner of aioquic: `receive_datagram` and `handle_timer` take
`now_ms`; `datagrams_to_send`, `next_deadline_ms` and `events` hand back what to
do. Randomness (protocol choices) and entropy (transaction ids) are passed in.

Shared here: the ingress pipeline, transactions with retransmission, answers and
their de-duplication, hop-by-hop acknowledgement of forwarded requests, storage,
diagnostics. A topology (ring_peer.py: Chord and one-hop; kademlia_peer.py)
decides where a request goes next, how a node joins and leaves, what it maintains
and where values are replicated. `make_peer` (peer.py) picks the class from the
configuration.

Node states (a table, STYLE.md habit 7):

    IDLE    --join(no bootstrap)-->  JOINED
    IDLE    --join(bootstrap)---->   JOINING --answer--> JOINED
    JOINING --all bootstraps failed-->  IDLE (JoinFailed)
    JOINED  --leave()-->  LEAVING --handover answered or timed out--> LEFT

A peer answers overlay requests only when JOINED or LEAVING; PING, STAT and CLOSEST always.

A client (seed 001) stores and routes nothing, and answers a PING so (LEAVING): whoever
still lists it from when it was a peer forgets it. Everything goes through one peer. A transient
one (the one-shot commands) just sends through its first bootstrap peer. An attached one
(`PeerConfig.attach`, a phone that is a client) joins by ATTACH to a bootstrap peer, keeps the
attachment alive with an ATTACH after `client_keepalive_ms` without a request of its own
answered through its peer, takes Tunnel requests its peer hands it ([NODE peer, NODE
client], attachment.py), and when its peer stops answering (a keepalive, or a request of its
own that needs a retransmission) attaches to the peer's alternates or the bootstrap peers
(an Attached event says so).

What the role policy (role.py) reads off a node: `link`, the loss and round trip to its
neighbours from the traffic above, and `reachable`, from a REACH now and then to a neighbour
that answers with a REACH_BACK from its other port (reachability.py; the driver sends
`datagrams_from_other_port` from a second socket).

Return routability and identity (STYLE.md habit 4, issues 11 and 15): answers to our own
requests carry our nonce (the transaction id), so they are believed; a request is a claim.
A request from a sender we have not proven is held while a PROVE checks it: the node at
that address must show a certificate the overlay's `Trust` admits for that node id and sign
our nonce with its key (security.py); only then does the request change a table, get an
answer or move on. So nobody can speak for a node id that is not theirs, and in an ad-hoc
overlay nobody chooses their id. PING and PROVE themselves are answered at once, no larger
than they came. Claims about third parties (a leaving node's neighbours, a newcomer
announced) are checked the same way before the topology is offered them; a node's leaving,
by asking it. Between real nodes every datagram comes over a link (net/links.py) that proved
its sender's certificate: `receive_datagram` is told the node id, and a request counts as
that node's only, with no PROVE.

In an enrolled overlay a peer also fetches the authority's revocations (revocation.py) when it
joins and each `revocation_check_ms`, asking every replica; a revoked node is then out of its
tables, its requests and answers count for nothing, and it gets no new link and stores nothing.
"""

from __future__ import annotations

import functools
from collections import Counter, deque
from dataclasses import dataclass, replace
from enum import Enum
from typing import Callable, NamedTuple, Protocol, Sequence

from .access import Checks, Refusal, answer_refusal, store_refusal
from .attachment import AttachedClients, Attachment
from .errors import DecodeError, ErrorCode, LocalProtocolError
from .events import Attached, Event, Joined, JoinFailed, Left, NodeFailed, RequestCompleted, Tunnelled
from .ids import RING
from .ingress import BoundedLru, TokenBuckets, network_of
from .limits import (
    ALTERNATES_MAX,
    DATAGRAM_BYTES_MAX,
    HELD_MAX,
    HELD_PER_SOURCE_MAX,
    HOP_ATTEMPTS_MAX,
    HOP_WAIT_FACTOR_MAX,
    INGRESS_BURST,
    INGRESS_NETWORK_BURST,
    INGRESS_NETWORK_RATE_PER_S,
    INGRESS_RATE_PER_S,
    KEEPALIVE_SLACK_MS,
    LINK_LOSS_TRANSMISSIONS,
    PEER_TABLE_MAX,
    PROOF_PADDING_BYTES,
    PROVEN_MAX,
    RATE_SOURCES_MAX,
    REPLICA_PUSHES_IN_FLIGHT_MAX,
    REPLICAS,
    SEALS_VERIFIED_MAX,
    SIGNATURE_BYTES,
    STAT_ITEMS_PER_PAGE,
    STAT_NAME_CHARS_MAX,
    STORAGE_TIME_AHEAD_MAX_MS,
    SUCCESSORS_KEPT,
    TTL_INITIAL,
    VERIFYING_MAX,
    VIA_ENTRIES_MAX,
    Timing,
)
from .overlay import Topology
from .reachability import Reachability
from .replication import ReplicaTracker
from .revocation import REVOCATIONS, Revoked, read_revocation
from .role import LinkQuality
from .rpc import AnswerCache, Hop, HopTracker, Pending, Transactions
from .security import Credential, Identity, Signer, Trust, VerifiedSeals, proof_challenge, seal, verify
from .storage import Key, Storage
from .usages import Kind, lifetime_max_s
from .wire import check_body, decode, encode
from .wire.messages import (
    EMPTY,
    Addr,
    AttachAns,
    Body,
    Code,
    DataModel,
    Dest,
    DestKind,
    Entry,
    Error,
    Fetch,
    FetchAns,
    Message,
    NodeInfo,
    Proof,
    Prove,
    Stat,
    StatAns,
    Store,
    StoreAns,
    Tunnel,
)


class Rng(Protocol):
    def random(self) -> float: ...


Entropy = Callable[[int], bytes]


class State(Enum):
    IDLE = "idle"
    JOINING = "joining"
    JOINED = "joined"
    LEAVING = "leaving"
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class PeerConfig:
    overlay_id: int
    timing: Timing = Timing()
    client: bool = False  # a client routes nothing and stores nothing for others (seed 001)
    attach: bool = False  # a long-running client: attached, kept alive, reachable through its peer
    reach_check: bool = True  # find out now and then whether strangers can reach us (reachability.py)
    # Ask for answers straight from the responder (RFC 7263) on a request's first
    # transmission; retransmissions always take the symmetric path, so an origin
    # behind a NAT that filters the direct answer loses one retransmission interval.
    direct_response: bool = True
    successors_kept: int = SUCCESSORS_KEPT  # Chord §5.2 suggests 2 log2 N against mass failure
    topology: Topology = Topology.CHORD
    replicas: int = REPLICAS  # copies of a value: Kademlia's closest nodes; the replicas a reader may ask
    trust: Trust = Trust()  # which certificates, hence which node ids, this overlay admits
    signed_values: bool = True  # False only to measure what signing costs (`tools/bench values`)


class Route(NamedTuple):
    addr: Addr
    dest: tuple[Dest, ...]  # possibly rewritten by the topology
    node_id: int | None     # None: a client's admitting peer, whose id it does not know


# -- why we sent a request: decides what its answer (or its timeout) does --

@dataclass(frozen=True, slots=True)
class Purpose:
    pass


@dataclass(frozen=True, slots=True)
class User(Purpose):
    handle: int
    fetch: Fetch | None = None  # a fetch's, checked when it is answered (`_done_user`)
    replica: int = 0  # which of the resource's replicas it asks: the responsible node's, or the next's


@dataclass(frozen=True, slots=True)
class Bootstrap(Purpose):
    """A join request to bootstrap[index]; when it fails the next one is asked."""

    bootstrap: tuple[Addr, ...]
    index: int


@dataclass(frozen=True, slots=True)
class Attaching(Purpose):
    """A client's ATTACH (or keepalive) to candidates[index]; when it fails the next is asked."""

    candidates: tuple[Addr, ...]
    index: int


@dataclass(frozen=True, slots=True)
class Reaching(Purpose):
    """A REACH: try to reach me from your other port."""


@dataclass(frozen=True, slots=True)
class Direct(Purpose):
    """A request to one known node: its silence means the node failed."""

    node: NodeInfo


@dataclass(frozen=True, slots=True)
class Probe(Direct):
    pass


@dataclass(frozen=True, slots=True)
class Farewell(Direct):
    """A leave notice or a handover store: leaving waits for these."""


@dataclass(frozen=True, slots=True)
class Handover(Farewell):
    """Leaving: our copy of `key` stored on the node that takes it over."""

    key: Key


@dataclass(frozen=True, slots=True)
class ReplicaPush(Direct):
    """A copy of `key` stored on a node that should hold one (replication.py paces them)."""

    key: Key


@dataclass(frozen=True, slots=True)
class Departure(Direct):
    """A node said it leaves: asked, it answers LEAVING or nothing; a plain answer means
    somebody else said it."""


@dataclass(frozen=True, slots=True)
class Verify(Purpose):
    """A PROVE to the address a node claims. Its transaction id is a fresh nonce, so only
    the node living there can answer it, and only with that id's key; silence proves
    nothing about the node (an impostor may have named it), so it is not a failure.
    `offer`: a claim about a neighbour, handed to the topology once proven."""

    node: NodeInfo
    offer: bool


_FULL = (ErrorCode.STORAGE_FULL, ErrorCode.QUOTA_EXCEEDED)
STAMP_ME: Addr = ("", 0)  # "answer me directly"; the first hop writes in the address it saw
TIMED_OUT = Error(ErrorCode.UNREACHABLE, "timed out")
_SENT = {code: "sent." + code.name for code in Code}
_BYTES = {code: "bytes." + code.name for code in Code}
# Not CLOSEST: a Kademlia node is in others' tables from its first lookup step on,
# and what it knows already helps them while its own join is still running.
_OVERLAY_CODES = frozenset({Code.JOIN, Code.LEAVE, Code.UPDATE, Code.FIND, Code.STORE, Code.FETCH, Code.ANNOUNCE,
                            Code.MEMBERS, Code.ATTACH})
_TO_CLIENTS = frozenset({Code.TUNNEL})  # what an attached client takes from its peer (and PING, from anyone)

Handler = Callable[[Message, NodeInfo, int], tuple[Code, Body]]


@functools.cache
def _widest_envelope_bytes(overlay_id: int, code: Code) -> int:
    """What a request's envelope can grow to on its way (a full via list, two destinations,
    the longest reply-to, a 64-bit transaction id), without its body."""
    widest = Message(TTL_INITIAL, (RING - 1,) * VIA_ENTRIES_MAX,
                     (Dest(DestKind.NODE, RING - 1), Dest(DestKind.RESOURCE, RING - 1)), 2**64 - 1, code, EMPTY,
                     None, ("0000:0000:0000:0000:0000:0000:0000:0000", 65535), True)
    return len(encode(widest, overlay_id)) - check_body(Code.PING, EMPTY)


def _writer_of(msg: Message, sender: NodeInfo) -> str:
    """Whom a store counts against: the host the origin sent from (as the first hop saw it)."""
    if len(msg.via) == 1:
        return sender.addr[0]
    if msg.reply_to is not None and msg.reply_to[0]:
        return msg.reply_to[0]
    return f"node {msg.via[0]:x}"


class PeerNode:
    """What every topology shares. Subclasses provide routing (`_hop_for`,
    `_address_of`), membership (`join`, `leave`, `_maintain`, `_node_failed`),
    replication (`_after_store`) and `_stat_topology`; they add their own request
    handlers and purposes to the two dispatch tables."""

    def __init__(self, me: NodeInfo, config: PeerConfig, identity: Identity, *, rng: Rng, entropy: Entropy,
                 now_ms: int, wall_offset_ms: int = 0) -> None:
        if identity.node_id != me.node_id:
            raise LocalProtocolError("a node's id is its certificate's")
        self.me = me
        self.identity = identity
        self._wall_offset_ms = wall_offset_ms  # writers' storage times are wall-clock ms: ours is now_ms plus this
        self.config = config
        self.storage = Storage()
        self._replicas = ReplicaTracker()
        self._handovers: deque[tuple[NodeInfo, Key]] = deque()  # leaving: values still to hand over
        self._handing: Counter[tuple[Key, int]] = Counter()  # and the parts of those on their way
        self.state = State.IDLE
        self.counters: Counter[str] = Counter()
        # Counters of what runs beside the node (its SIP front), reported with ours by STAT
        # where they are named as ours are (a dotted word that fits STAT_NAME_CHARS_MAX; the
        # front's others are sentences for its log); the driver carries them across roles.
        self.counters_beside: Counter[str] | None = None
        self._rng = rng
        self._entropy = entropy
        self._timing = config.timing
        self._rpc: Transactions[Purpose] = Transactions(config.timing)
        hop_wait_ms = config.timing.hop_ack_timeout_ms  # and no longer than the origin waits to retransmit:
        self._hops = HopTracker(hop_wait_ms, ceiling_ms=min(
            hop_wait_ms * HOP_WAIT_FACTOR_MAX, max(hop_wait_ms, config.timing.routed_retransmit_first_ms)))
        self._answers = AnswerCache(config.timing.dedup_window_ms)
        self._recent: BoundedLru[int, Addr] = BoundedLru(PEER_TABLE_MAX)  # return paths
        self._host_rate = TokenBuckets[str](INGRESS_RATE_PER_S, INGRESS_BURST, RATE_SOURCES_MAX)
        self._network_rate = TokenBuckets[str](INGRESS_NETWORK_RATE_PER_S, INGRESS_NETWORK_BURST, RATE_SOURCES_MAX)
        self._outbox: list[tuple[bytes, Addr]] = []
        self._events: list[Event] = []
        self._next_handle = 1
        self._maintenance_ms: int | None = None
        self._in_flight: set[tuple[str, int]] = set()  # (task, node id): one probe at a time
        self._admitting: Addr | None = None
        self._attachment: Attachment | None = None  # an attached client's
        self._keepalive_ms = config.timing.client_keepalive_ms
        self._peer_answered_ms = -(1 << 62)  # when our peer last passed an answer of ours back
        self._clients = AttachedClients(config.timing.client_keepalive_ms)  # a peer's
        self.link = LinkQuality()  # round trip and loss to our neighbours, for the role policy
        self._reach = Reachability(config.timing.reach_check_ms, retry_ms=10 * config.timing.maintenance_interval_ms)
        self._maintenance_stretch = 1
        self._from_other_port: list[tuple[bytes, Addr]] = []
        # Address -> the id that answered a nonce of ours there, or proved its key there (a
        # PROVE): never rate-limited, and its requests count (`_is_proven`).
        self._proven: BoundedLru[Addr, int] = BoundedLru(PROVEN_MAX)
        self._verified_seals: VerifiedSeals = BoundedLru(SEALS_VERIFIED_MAX)
        self._revoked = Revoked()
        self._checks = Checks(config.overlay_id, config.trust.authority, self._revoked, self._verified_seals)
        self._revocations_due_ms = 0  # an enrolled overlay's peer: when to fetch the revocations next
        self._revocations_fetch: int | None = None  # the handle of that fetch while it runs
        self._heard: BoundedLru[int, int] = BoundedLru(PEER_TABLE_MAX)  # node id -> when a proven datagram came
        self._held: dict[Addr, list[Message]] = {}
        self._held_count = 0
        self._verifying: set[Addr] = set()
        self._request_handlers: dict[Code, Handler] = {
            Code.PING: self._on_ping,
            Code.STORE: self._on_store,
            Code.FETCH: self._on_fetch,
            Code.STAT: self._on_stat,
            Code.TUNNEL: self._on_tunnel,
            Code.ATTACH: self._on_attach,
            Code.REACH: self._on_reach,
            Code.PROVE: self._on_prove,
        }
        self._answer_handlers: dict[type, Callable[[Purpose, Message | None, int], None]] = {
            User: self._done_user,
            Probe: self._done_probe,
            Farewell: self._done_farewell,
            Handover: self._done_farewell,
            Departure: self._done_departure,
            ReplicaPush: self._replica_pushed,
            Verify: self._done_verify,
            Attaching: self._done_attaching,
            Reaching: self._done_reaching,
        }

    # ------------------------------------------------------------------ driver side

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._outbox = self._outbox, []
        return out

    def datagrams_from_other_port(self) -> list[tuple[bytes, Addr]]:
        """Datagrams the driver sends from a second socket, never from the node's own port (the
        reach test's REACH_BACK: to the receiver's NAT or firewall, a stranger)."""
        out, self._from_other_port = self._from_other_port, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def stretch_maintenance(self, factor: int) -> None:
        """Maintain every `factor` periods (a peer on its battery: fewer wake-ups and datagrams, its
        neighbours' failures found that much later); 1: the configured period. From the next round."""
        self._maintenance_stretch = max(1, factor)

    @property
    def reachable(self) -> bool | None:
        """Whether a neighbour's datagram from a port we never sent to got in (None: not known yet)."""
        return self._reach.reachable

    def next_deadline_ms(self) -> int | None:
        deadlines = [d for d in (self._rpc.next_deadline_ms(), self._hops.next_deadline_ms(), self._maintenance_ms,
                                 self._reach.next_deadline_ms()) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, *, now_ms: int) -> None:
        for hop in self._hops.due(now_ms=now_ms):
            self._hop_not_acked(hop, now_ms)
        resend, expired = self._rpc.due(now_ms=now_ms)
        for pending in resend:
            if pending.target is not None and pending.transmissions == LINK_LOSS_TRANSMISSIONS:
                self._link_lost(pending.target, now_ms)
            elif self.config.attach and self.state is State.JOINED:
                self._keep_attached(now_ms)  # no answer through our peer yet: is it there?
            self._retransmit(pending, now_ms)
        for pending in expired:
            if pending.target is not None and pending.transmissions < LINK_LOSS_TRANSMISSIONS:
                self._link_lost(pending.target, now_ms)
            self.counters["timeouts"] += 1
            self._finish(pending.purpose, None, now_ms, silent_since_ms=pending.started_ms)
        self._check_reach(now_ms)
        if self._maintenance_ms is not None and now_ms >= self._maintenance_ms:
            if self.config.client:
                # A request of ours through our peer answered within the period did the keepalive's
                # work (the NAT binding, the peer's note of us): the keepalive waits for that much
                # silence, and a moment more, so that a request of the same period (the front's
                # audit) is not sent beside it.
                quiet_from_ms = self._peer_answered_ms + KEEPALIVE_SLACK_MS
                if quiet_from_ms > now_ms - self._keepalive_ms:
                    self._maintenance_ms = quiet_from_ms + self._keepalive_ms
                else:
                    self._maintenance_ms = now_ms + self._keepalive_ms
                    if self.state is State.JOINED:
                        self._keep_attached(now_ms)
            else:
                interval = self._timing.maintenance_interval_ms * self._maintenance_stretch
                self._maintenance_ms = now_ms + int(interval * (0.75 + 0.5 * self._rng.random()))  # no lockstep
                if self.state is State.JOINED:
                    self._maintain(now_ms)
                    self._keep_revoked_out(now_ms)
                self._clients.forget_silent(now_ms=now_ms)
            self.storage.expire(now_ms=now_ms)
            self._answers.expire(now_ms=now_ms)

    def receive_datagram(self, data: bytes, addr: Addr, *, now_ms: int, link_id: int | None = None) -> bool:
        """The ingress pipeline: each stage may drop, and counts why (STYLE.md habit 4).
        False when it was dropped before decoding: nothing changed, a driver under a flood
        need not look for output. `link_id`: the node an authenticated link (net/links.py)
        says sent it; a request then counts as that node's without a PROVE, and only as its."""
        msg = self._decoded(data, addr, now_ms, link_id)
        if msg is None:
            return False
        if link_id is not None and msg.code.is_request and msg.via[-1:] != (link_id,):
            self._drop("link_id")  # a node speaking as another over its own link
            return False
        if msg.code.is_request:
            self._receive_request(msg, addr, now_ms)
        else:
            self._receive_answer(msg, now_ms)
        return True

    def receive_plain(self, data: bytes, addr: Addr, *, now_ms: int) -> bool:
        """A datagram that came outside any link: only a REACH_BACK counts (it comes from a
        port that has none, and carries the nonce we sent over one)."""
        msg = self._decoded(data, addr, now_ms, None)
        if msg is None:
            return False
        if msg.code is not Code.REACH_BACK:
            self._drop("plain")
            return False
        self._receive_answer(msg, now_ms)
        return True

    def _decoded(self, data: bytes, addr: Addr, now_ms: int, link_id: int | None) -> Message | None:
        """The pipeline's first stages: size, the rate of senders not proven, the decoder."""
        self.counters["received"] += 1
        if len(data) > DATAGRAM_BYTES_MAX:
            self._drop("oversize")
            return None
        if link_id is not None:
            self._proven.put(addr, link_id)
        if self._proven.get(addr) is None and not (self._host_rate.allow(addr[0], now_ms=now_ms)
                                                   and self._network_rate.allow(network_of(addr[0]), now_ms=now_ms)):
            self._drop("rate")
            return None
        try:
            return decode(data, self.config.overlay_id)
        except DecodeError as e:
            self._drop(e.reason)
            return None

    def admits(self, certificate: bytes) -> Credential | None:
        """The credential of a certificate this overlay admits and nobody revoked (links)."""
        credential = self.config.trust.admit(certificate)
        if credential is not None and self._revoked.covers(credential):
            self.counters["refused.revoked"] += 1
            return None
        return credential

    # ------------------------------------------------------------------ commands

    def join(self, bootstrap: Sequence[Addr], *, now_ms: int) -> None:
        if self.state is not State.IDLE:
            raise LocalProtocolError(f"join in state {self.state.value}")
        if self.config.client:
            if not bootstrap:
                raise LocalProtocolError("a client needs a peer to attach to")
            if self.config.attach:
                self._attachment = Attachment(tuple(bootstrap))
                self.state = State.JOINING
                self._attach(self._attachment.candidates(), 0, now_ms)
            else:
                self._admitting = bootstrap[0]
                self._joined(now_ms)
        elif not bootstrap:
            self._joined(now_ms)
        else:
            self.state = State.JOINING
            self._send_join(Bootstrap(tuple(bootstrap), 0), now_ms)

    def leave(self, *, now_ms: int) -> None:
        """Hand our values over and tell our neighbours (the topology's `_farewell`), then
        report Left once they have answered or timed out."""
        if self.state is not State.JOINED:
            self._set_left()
            return
        self.state = State.LEAVING
        self._maintenance_ms = None
        if self.config.client or not self._farewell(now_ms):
            self._set_left()
            return
        self._maybe_left()

    def store(self, resource: int, kind: int, model: DataModel, entries: Sequence[Entry], *, now_ms: int,
              signer: Signer | None = None, first_hop: Addr | None = None) -> int:
        """Store `entries`, each sealed by `signer` (default: this node's identity) unless sealed."""
        by = signer or self.identity
        sealed = tuple(e if e.seal or not self.config.signed_values
                       else seal(e, self.config.overlay_id, resource, kind, model, by) for e in entries)
        return self._user_request(Code.STORE, Store(resource, kind, model, sealed, False), resource, now_ms, first_hop)

    def fetch(self, resource: int, kind: int, *, now_ms: int, first_hop: Addr | None = None) -> int:
        """Fetch what is stored under (resource, kind); an answer that fails its seals or rule
        is counted and asked of the next replica instead."""
        return self._user_request(Code.FETCH, Fetch(resource, kind), resource, now_ms, first_hop)

    def lookup(self, target: int, *, now_ms: int, first_hop: Addr | None = None) -> int:
        """Find the node responsible for `target` (its FindAns, and `responder`)."""
        return self._user_request(Code.FIND, EMPTY, target, now_ms, first_hop)

    def tunnel(self, node_id: int, payload: bytes, *, now_ms: int, via: int | None = None) -> int:
        """Carry `payload` to the node `node_id` through the overlay; it gets a Tunnelled event.
        Routed to that node by every topology (not through Kademlia's resource lookups). `via`:
        the admitting peer of `node_id`, a client."""
        to = Dest(DestKind.NODE, node_id)
        dest = (to,) if via is None else (Dest(DestKind.NODE, via), to)
        # A client says how to reach it back: nobody routes to a client but its own peer.
        reply_via = self.admitting_peer.node_id if self.admitting_peer is not None else None
        return self._originate_to(Code.TUNNEL, Tunnel(payload, reply_via), dest, now_ms, None)

    def known_peers(self) -> list[Addr]:
        """Peers to join or attach through after a role change: a client's peer and the peers it
        would fall back on; a peer's successors (or nearest contacts)."""
        if self._attachment is not None:
            return list(self._attachment.candidates())
        return [n.addr for n in self._successor_nodes()]

    def _successor_nodes(self) -> list[NodeInfo]:
        """Our successors (Kademlia: nearest contacts) with the addresses we know them at."""
        _, successors, _ = self._stat_topology()
        return [NodeInfo(s, a) for s in successors if (a := self._address_of(s)) is not None]

    @property
    def admitting_peer(self) -> NodeInfo | None:
        """An attached client's peer (None: a peer, or not attached yet)."""
        return self._attachment.peer if self._attachment is not None else None

    def stat(self, peer: Addr, *, now_ms: int, page: int = 0) -> int:
        """One page of the diagnostics of the peer at `peer` (an empty destination list:
        whoever receives it); its answer says how many pages there are."""
        handle = self._new_handle()
        self._request(Code.STAT, Stat(page), (), User(handle), now_ms, target=peer)
        return handle

    def stat_local(self, *, now_ms: int) -> StatAns:
        """Our diagnostics, every finger and counter in one answer (it is not sent)."""
        return self._stat_body(None, now_ms)

    # ------------------------------------------------------------------ topology hooks

    def _send_join(self, purpose: Bootstrap, now_ms: int) -> None:
        """Ask purpose.bootstrap[purpose.index] to let us in; the answer goes to the
        handler the topology registered for Bootstrap."""
        raise NotImplementedError

    def _next_hop(self, dest: tuple[Dest, ...], avoid: frozenset[int] = frozenset(),
                  sender: int | None = None) -> Route | Error | None:
        """Where a request for `dest` goes next: None means here; an Error is what to answer
        instead. A client sends everything through its admitting peer; a peer asks its topology."""
        if self.config.client:
            if not dest or dest == (Dest(DestKind.NODE, self.me.node_id),):
                return None  # for us: a STAT, or what our peer hands us
            if self._admitting is None:
                return Error(ErrorCode.UNREACHABLE, "not attached")
            return Route(self._admitting, dest, None)
        if len(dest) == 2 and dest[0].kind is DestKind.NODE and dest[1].kind is DestKind.NODE:
            return self._hop_to_client(dest, avoid, sender)
        return self._hop_for(dest, avoid, sender)

    def _hop_to_client(self, dest: tuple[Dest, ...], avoid: frozenset[int], sender: int | None) -> Route | Error | None:
        """[NODE peer, NODE client]: to the peer as to any node; there, to the client."""
        if dest[0].id != self.me.node_id:
            hop = self._hop_for(dest[:1], avoid, sender)
            return Route(hop.addr, dest, hop.node_id) if isinstance(hop, Route) else hop
        addr = self._clients.address(dest[1].id)
        if addr is None:
            return Error(ErrorCode.UNREACHABLE, "no such client attached here")
        return Route(addr, dest[1:], None)

    def _hop_for(self, dest: tuple[Dest, ...], avoid: frozenset[int] = frozenset(),
                 sender: int | None = None) -> Route | Error | None:
        """`_next_hop` for a peer, by its topology."""
        raise NotImplementedError

    def _farewell(self, now_ms: int) -> bool:
        """Leaving: hand values over and tell neighbours (each a Farewell request); False when
        there is nobody to tell."""
        raise NotImplementedError

    def _lost(self, node_id: int) -> None:
        """What every topology does once it has declared `node_id` failed."""
        self._recent.pop(node_id)
        self._replicas.forget_node(node_id)
        self.link.forget(node_id)  # its silence says nothing about our own link
        self.counters["node_failed"] += 1
        self._events.append(NodeFailed(node_id))

    def _address_of(self, node_id: int) -> Addr | None:
        raise NotImplementedError

    def _link_lost(self, target: Addr, now_ms: int) -> None:
        """A request to a neighbour went unanswered twice (or for good): a loss on the link to the
        node known there. One silence is not enough: a busy neighbour's late answer is not a lost
        datagram, and an answer after a retransmission says nothing either way (Karn), so each
        request counts once, answered at the first try or lost at the second."""
        node_id = self._proven.get(target)
        if node_id is not None:
            self.link.lost(node_id, now_ms=now_ms)

    def _maintain(self, now_ms: int) -> None:
        raise NotImplementedError

    def _node_failed(self, node_id: int, now_ms: int) -> None:
        raise NotImplementedError

    def _after_store(self, key: Key, body: Store, now_ms: int) -> None:
        """A store succeeded here: replicate it as the topology does (the copies wanted are
        pushed once the store is answered)."""

    def _offered(self, node: NodeInfo, now_ms: int) -> None:
        """A node somebody told us about proved it lives at its address: the topology may
        take it as a neighbour, as it would one it found itself."""

    def _departed(self, node: NodeInfo, now_ms: int) -> None:
        """A node that said it leaves confirmed it: forget it as the topology does."""

    def _stat_topology(self) -> tuple[int | None, tuple[int, ...], tuple[int, ...]]:
        """(predecessor, successors, fingers) as the topology understands them."""
        raise NotImplementedError

    def _replication_pending(self) -> int:
        return 0

    # ------------------------------------------------------------------ ingress

    def _drop(self, reason: str) -> None:
        self.counters["drop." + reason] += 1

    def _receive_request(self, msg: Message, addr: Addr, now_ms: int) -> None:
        if not msg.via:
            self._drop("via")
            return
        sender = NodeInfo(msg.via[-1], addr)
        if msg.via[-1] == self.me.node_id:
            self._drop("loop")
            return
        if msg.code is Code.PROVE and not self._padded_for_proof(msg):
            self._drop("prove_unpadded")  # no answer: it would be larger than the request
            return
        if msg.code in (Code.PING, Code.PROVE) and msg.dest in ((), ((DestKind.NODE, self.me.node_id),)):
            self._perform(msg, sender, addr, now_ms)  # at once, no larger than it came: how senders prove themselves
            return
        if self.config.client:
            from_peer = self.config.attach and addr == self._admitting and msg.code in _TO_CLIENTS
            if not (from_peer or (msg.code is Code.STAT and not msg.dest)):  # diagnostics: from anyone, as a peer's
                self._drop("state")
                return
        elif msg.code in _OVERLAY_CODES and self.state not in (State.JOINED, State.LEAVING):
            self._drop("state")
            return
        if not self._is_proven(sender):
            self._hold(msg, sender, now_ms)
            return
        self._recent.put(sender.node_id, addr)
        self._heard.put(sender.node_id, now_ms)
        if len(msg.via) == 1 and self._clients.address(sender.node_id) == addr:
            self._clients.heard(sender.node_id, addr, now_ms=now_ms)  # any request of a client keeps it attached
        self._heard_from(sender, msg, now_ms)
        self._route_request(msg, sender, addr, now_ms)
        if msg.hop_ack:  # after the request moved on: the ack is not on the critical path
            self._send(Message(1, (self.me.node_id,), (), msg.txid, Code.HOP_ACK, EMPTY), addr)

    def _heard_from(self, sender: NodeInfo, msg: Message, now_ms: int) -> None:
        """A proven peer's request reached us (Kademlia learns its contacts from these)."""

    # ------------------------------------------------------------------ return routability

    def _is_proven(self, node: NodeInfo) -> bool:
        """`node` proved its key at its address (a PROVE), answered a request of ours there as
        that id, or is in our tables there; over a link, the link proved it (`receive_datagram`).
        In clear (the simulator, core tests) a stranger, whom nobody lists, always proves its key;
        the other two spare a busy overlay a proof per neighbour, and leave a hole that only
        links close: a node that neighbours list under a made-up id can speak as it."""
        if self._revoked.node(node.node_id):
            return False
        return self._proven.get(node.addr) == node.node_id or self._address_of(node.node_id) == node.addr

    def _hold(self, msg: Message, sender: NodeInfo, now_ms: int) -> None:
        """Keep a request from an unproven sender until it answers our ping (bounded, per source
        and in all); the previous hop hears at once that it arrived."""
        held = self._held.get(sender.addr, [])
        if self._held_count >= HELD_MAX or len(held) >= HELD_PER_SOURCE_MAX:
            self._drop("unproven")
            return
        self._held[sender.addr] = [*held, msg]
        self._held_count += 1
        if msg.hop_ack:
            self._send(Message(1, (self.me.node_id,), (), msg.txid, Code.HOP_ACK, EMPTY), sender.addr)
        if not self._verify(sender, now_ms):
            dropped = self._held.pop(sender.addr, [])
            self._held_count -= len(dropped)
            self.counters["drop.unproven"] += len(dropped)

    def _verify(self, node: NodeInfo, now_ms: int, *, offer: bool = False) -> bool:
        """Ping `node` at its address unless it is proven (then an offer goes through at once)
        or a ping to that address is out; False when too many are out."""
        if node.node_id == self.me.node_id:
            return False
        if self._revoked.node(node.node_id):
            self.counters["refused.revoked"] += 1  # no proof would count: its certificate was withdrawn
            return False
        if self._is_proven(node):
            if offer:
                self._offered(node, now_ms)
            return True
        if node.addr in self._verifying:
            return True
        if len(self._verifying) >= VERIFYING_MAX:
            self.counters["verify_busy"] += 1
            return False
        self._verifying.add(node.addr)
        self._request(Code.PROVE, Prove(bytes(PROOF_PADDING_BYTES)), (Dest(DestKind.NODE, node.node_id),),
                      Verify(node, offer), now_ms, target=node.addr)
        return True

    def _done_verify(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, Verify)
        node = purpose.node
        self._verifying.discard(node.addr)
        held = self._held.pop(node.addr, [])
        self._held_count -= len(held)
        if not self._proves(answer, node):
            self.counters["unproven"] += 1
            self.counters["drop.unproven"] += len(held)
            return
        self._proven.put(node.addr, node.node_id)
        if purpose.offer:
            self._offered(node, now_ms)
        for msg in held:
            self._receive_request(msg, node.addr, now_ms)

    def _proves(self, answer: Message | None, node: NodeInfo) -> bool:
        if answer is None or not isinstance(answer.body, Proof) or answer.via[-1:] != (node.node_id,):
            return False
        cred = self.config.trust.admit(answer.body.certificate)
        if cred is not None and self._revoked.covers(cred):
            self.counters["refused.revoked"] += 1
            return False
        if cred is None or cred.node_id != node.node_id or not verify(
                cred.public_key, answer.body.signature,
                proof_challenge(self.config.overlay_id, answer.txid, self.me.node_id, node.node_id)):
            self.counters["refused.identity"] += 1
            return False
        return True

    # ------------------------------------------------------------------ revocations (revocation.py)

    def _keep_revoked_out(self, now_ms: int) -> None:
        """Each round: fetch the authority's revocations when due, and take every revoked node
        out of our tables (a neighbour that does not know yet may have listed it again)."""
        if not self.config.trust.enrolled or not self.config.signed_values:
            return
        if now_ms >= self._revocations_due_ms and self._revocations_fetch is None:
            self._revocations_due_ms = now_ms + self._timing.revocation_check_ms
            self.counters["revocation_checks"] += 1
            # Its handle is ours before it starts: a node that holds the resource itself (the
            # first of an overlay, alone) has the answer before the request returns.
            self._revocations_fetch = self._new_handle()
            self._user_request(Code.FETCH, Fetch(REVOCATIONS, Kind.REVOCATION), REVOCATIONS, now_ms, None,
                               handle=self._revocations_fetch)
        for node_id in self._revoked.node_ids():
            if self._address_of(node_id) is not None:
                self.counters["revoked_out"] += 1
                self._node_failed(node_id, now_ms)

    def _learn_revocations(self, entries: Sequence[Entry]) -> None:
        """Entries the access rule let through (the authority's): believed from now on."""
        for e in entries:
            revocation = read_revocation(e)
            if revocation is not None and self._revoked.add(revocation):
                self.counters["revocations_learned"] += 1

    def _check_departure(self, node: NodeInfo, now_ms: int) -> None:
        """`node` says it leaves: ask it (at the address we know for it)."""
        addr = self._address_of(node.node_id)
        if addr is None or ("departure", node.node_id) in self._in_flight:
            return
        self._in_flight.add(("departure", node.node_id))
        self._request(Code.PING, EMPTY, (Dest(DestKind.NODE, node.node_id),), Departure(NodeInfo(node.node_id, addr)),
                      now_ms, target=addr)

    def _done_departure(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, Departure)
        self._in_flight.discard(("departure", purpose.node.node_id))
        if answer is None:
            return  # _finish declared it failed: gone either way
        if isinstance(answer.body, Error) and answer.body.code == ErrorCode.LEAVING:
            self._forget_departed(purpose.node, now_ms)
        else:
            self.counters["forged_leave"] += 1

    def _forget_departed(self, node: NodeInfo, now_ms: int) -> None:
        self._replicas.forget_node(node.node_id)
        self._departed(node, now_ms)

    def _route_request(self, msg: Message, sender: NodeInfo, addr: Addr, now_ms: int) -> None:
        hop = self._next_hop(msg.dest, sender=sender.node_id)
        if isinstance(hop, Error):
            self._answer(msg, Code.ERROR, hop, addr, now_ms)
        elif hop is None:
            self._execute(msg, sender, addr, now_ms)
        elif msg.ttl <= 1 or len(msg.via) >= VIA_ENTRIES_MAX:
            self._answer(msg, Code.ERROR, Error(ErrorCode.TTL_EXCEEDED, "ttl exceeded"), addr, now_ms)
        else:
            self.counters["forwarded"] += 1
            reply_to = addr if msg.reply_to is not None and len(msg.via) == 1 else msg.reply_to
            onward = Message(msg.ttl - 1, (*msg.via, self.me.node_id), msg.dest, msg.txid, msg.code, msg.body,
                             msg.signature, reply_to)
            self._send_routed(onward, msg.dest, hop, frozenset(), now_ms, (msg, sender, addr))

    def _send_routed(self, msg: Message, route: tuple[Dest, ...], hop: Route, avoid: frozenset[int],
                     now_ms: int, received: tuple[Message, NodeInfo, Addr] | None = None) -> None:
        """Send `msg` along `hop`, asking the next node for a hop ack we wait for; `received` is
        the request as it reached us, kept in case the way on fails and we turn out to be its end."""
        ack = hop.node_id is not None and self._hops.track(msg, route, hop.node_id, avoid, now_ms=now_ms,
                                                           received=received)
        self._send(Message(msg.ttl, msg.via, hop.dest, msg.txid, msg.code, msg.body, msg.signature, msg.reply_to,
                           ack), hop.addr)

    def _hop_not_acked(self, hop: Hop, now_ms: int) -> None:
        """The next hop stayed silent: suspect it, and send the request around it."""
        self.counters["hop_timeouts"] += 1
        self.link.lost(hop.next_id, now_ms=now_ms)
        suspect = self._address_of(hop.next_id)
        if suspect is not None:
            self._probe(NodeInfo(hop.next_id, suspect), now_ms)
        avoid = hop.avoid | {hop.next_id}
        if len(avoid) >= HOP_ATTEMPTS_MAX:
            return  # the origin's retransmission takes over
        route = self._next_hop(hop.route, avoid, sender=hop.received[1].node_id if hop.received else None)
        if isinstance(route, Route):
            self.counters["rerouted"] += 1
            self._send_routed(hop.msg, hop.route, route, avoid, now_ms, hop.received)
        elif route is None and hop.received is not None:
            # Without the silent node we are the end of the way (its range is ours now).
            self.counters["rerouted"] += 1
            self._execute(*hop.received, now_ms)

    def _execute(self, msg: Message, sender: NodeInfo, addr: Addr, now_ms: int) -> None:
        """Run a request meant for us, unless it is a retransmission: that gets the
        answer we gave, never a second execution."""
        cached = self._answers.get(msg.via[0], msg.txid, now_ms=now_ms)
        if cached is not None:
            self.counters["deduplicated"] += 1
            self._answer(msg, cached.code, cached.body, addr, now_ms, cache=False)
            return
        self._perform(msg, sender, addr, now_ms)

    def _perform(self, msg: Message, sender: NodeInfo, addr: Addr, now_ms: int) -> None:
        handler = self._request_handlers.get(msg.code)
        if handler is None:  # a request of another topology's protocol
            self._answer(msg, Code.ERROR, Error(ErrorCode.BAD_REQUEST, "unsupported request"), addr, now_ms)
            return
        code, body = handler(msg, sender, now_ms)
        self._answer(msg, code, body, addr, now_ms)
        self._push_replicas(now_ms)  # copies of what it stored leave after its answer, not before

    def _answer(self, req: Message, code: Code, body: Body, addr: Addr, now_ms: int, *, cache: bool = True) -> None:
        """Answer `req`. The answer's via list is the request's path ending with us, so
        the origin learns the hop count and who answered (PathTrack, RFC 6940 §6.5.4)."""
        # Straight to the origin only on the word of a neighbour in our tables: the first hop
        # stamped the address once the origin proved it; anyone else gets the answer itself.
        if (req.reply_to is not None and len(req.via) > 1 and self._address_of(req.via[-1]) == addr
                and req.reply_to[0] and 0 < req.reply_to[1] < 65536):
            back: tuple[Dest, ...] = (Dest(DestKind.NODE, req.via[0]),)
            addr = req.reply_to
        else:
            back = tuple(Dest(DestKind.NODE, v) for v in reversed(req.via))
        # A ping's answer names only us: no larger than the ping, whoever sent it.
        # (A full via list loses its first entry: the path a decoder takes is at most VIA_ENTRIES_MAX.)
        path = (self.me.node_id,) if req.code is Code.PING else (*req.via, self.me.node_id)[-VIA_ENTRIES_MAX:]
        answer = Message(TTL_INITIAL, path, back, req.txid, code, body)
        data = encode(answer, self.config.overlay_id)
        if len(data) > DATAGRAM_BYTES_MAX:
            code, body = Code.ERROR, Error(ErrorCode.TOO_LARGE, "answer exceeds one datagram")
            answer = Message(TTL_INITIAL, path, back, req.txid, code, body)
            data = encode(answer, self.config.overlay_id)
        if cache:
            self._answers.put(req.via[0], req.txid, code, body, now_ms=now_ms)
        self.counters[_SENT[code]] += 1
        self.counters[_BYTES[code]] += len(data)
        self._outbox.append((data, addr))

    def _receive_answer(self, msg: Message, now_ms: int) -> None:
        if msg.code is Code.HOP_ACK:
            rtt_ms = self._hops.acked(msg.txid, msg.via[0], now_ms=now_ms) if msg.via else None
            if rtt_ms is None:
                self._drop("unexpected_ack")
            else:
                self.link.acknowledged(msg.via[0], rtt_ms, now_ms=now_ms)
            return
        if msg.code is Code.REACH_BACK:
            if self._reach.came_back(msg.txid):
                self.counters["reach.reachable"] += 1
            else:
                self._drop("unexpected_reach")
            return
        if not msg.dest or msg.dest[0] != (DestKind.NODE, self.me.node_id):
            self._drop("misrouted")
            return
        rest = msg.dest[1:]
        if msg.via and self._revoked.node(msg.via[-1]):
            self._drop("revoked")  # its certificate was withdrawn: nothing it says is believed
            return
        if not rest:
            pending = self._rpc.close(msg.txid)
            if pending is None:
                self._drop("unknown_transaction")
                return
            if pending.target is not None and pending.transmissions == 1 and msg.via:  # no ambiguity
                self.link.acknowledged(msg.via[-1], now_ms - pending.started_ms, now_ms=now_ms)
            if msg.via:
                self._heard.put(msg.via[-1], now_ms)
            if pending.target is not None and msg.via and msg.code not in (Code.ERROR, Code.PROVE_ANS):
                self._proven.put(pending.target, msg.via[-1])  # it answered our nonce there (a PROVE's: _done_verify)
            self._finish(pending.purpose, msg, now_ms)
            return
        nxt = rest[0]
        addr = self._address_of(nxt.id) if nxt.kind is DestKind.NODE else None
        addr = addr or self._recent.get(nxt.id)
        if addr is None or msg.ttl <= 1:
            self._drop("no_return_path")
            return
        self._send(Message(msg.ttl - 1, msg.via, rest, msg.txid, msg.code, msg.body, msg.signature), addr)

    # ------------------------------------------------------------------ request handlers

    def _on_ping(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        if self.state in (State.LEAVING, State.LEFT):
            return Code.ERROR, Error(ErrorCode.LEAVING, "leaving")
        if self.config.client:
            # Only a peer that lists us from before we became a client checks on us (its own
            # clients' attachments it follows by their keepalives): we route nothing now.
            # Answered alive, it kept us, and sent routed requests into a client that drops
            # them (a fetch at 10,000 nodes found three such fingers in a row).
            return Code.ERROR, Error(ErrorCode.LEAVING, "a client routes nothing")
        return Code.PING_ANS, EMPTY

    def _padded_for_proof(self, msg: Message) -> bool:
        return isinstance(msg.body, Prove) and len(msg.body.padding) >= len(self.identity.certificate) + SIGNATURE_BYTES

    def _on_prove(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        challenge = proof_challenge(self.config.overlay_id, msg.txid, msg.via[0], self.me.node_id)
        return Code.PROVE_ANS, Proof(self.identity.certificate, self.identity.sign(challenge))

    def _on_store(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        body = msg.body
        assert isinstance(body, Store)
        if any(e.storage_time_ms > now_ms + self._wall_offset_ms + STORAGE_TIME_AHEAD_MAX_MS for e in body.entries):
            self.counters["refused.data_too_new"] += 1
            return Code.ERROR, Error(ErrorCode.DATA_TOO_NEW, "storage time ahead of the storing peer's clock")
        cap_s = lifetime_max_s(body.kind)
        if any(e.lifetime_s > cap_s for e in body.entries):
            body = replace(body, entries=tuple(replace(e, lifetime_s=min(e.lifetime_s, cap_s)) for e in body.entries))
        refusal = store_refusal(body, self.storage, self._checks, now_ms + self._wall_offset_ms) \
            if self.config.signed_values else None
        if refusal is not None:
            self.counters[f"refused.{refusal.counter}"] += 1
            return Code.ERROR, Error(ErrorCode.FORBIDDEN, refusal.reason)
        result = self.storage.store(body, now_ms=now_ms, writer=None if body.replica else _writer_of(msg, sender))
        if isinstance(result, Error):
            self.counters[f"refused.{ErrorCode(result.code).name.lower()}"] += 1
            return Code.ERROR, result
        self._after_store((body.resource, body.kind), body, now_ms)
        if body.kind == Kind.REVOCATION and self.config.signed_values:
            self._learn_revocations(body.entries)  # we hold them: we know at once
        return Code.STORE_ANS, StoreAns(len(result))

    def _on_fetch(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        body = msg.body
        assert isinstance(body, Fetch)
        return Code.FETCH_ANS, self.storage.fetch(body.resource, body.kind, now_ms=now_ms)

    def _on_tunnel(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        assert isinstance(msg.body, Tunnel)
        self._events.append(Tunnelled(msg.via[0], msg.body.payload, msg.body.reply_via))
        return Code.TUNNEL_ANS, EMPTY

    def _on_attach(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        """A client attaches, or keeps its attachment alive. It has answered our ping at this
        address (return routability, above): requests for it go there."""
        if len(msg.via) != 1:
            return Code.ERROR, Error(ErrorCode.BAD_REQUEST, "attach to a peer directly")
        if self.state is not State.JOINED:
            return Code.ERROR, Error(ErrorCode.LEAVING, "leaving")
        self._clients.heard(sender.node_id, sender.addr, now_ms=now_ms)
        alternates = tuple(self._successor_nodes()[:ALTERNATES_MAX])
        return Code.ATTACH_ANS, AttachAns(self._timing.client_keepalive_ms // 1000, alternates)

    def _on_stat(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        assert isinstance(msg.body, Stat)
        return Code.STAT_ANS, self._stat_body(msg.body.page, now_ms)

    def _stat_body(self, page: int | None, now_ms: int) -> StatAns:
        """Page `page` of our diagnostics (None: all of it)."""
        gauges = {"client": 1} if self.config.client else {"clients": len(self._clients)}
        rtt_ms, loss = self.link.measured(now_ms=now_ms)
        if rtt_ms is not None and loss is not None:
            gauges |= {"link.rtt_ms": round(rtt_ms), "link.loss_permille": round(loss * 1000)}
        if self.reachable is not None:
            gauges["reachable"] = int(self.reachable)
        if self.config.trust.enrolled:
            gauges["revoked"] = len(self._revoked)
        if not self.config.client:
            gauges["maintenance_ms"] = self._timing.maintenance_interval_ms * self._maintenance_stretch
        beside = {k: v for k, v in (self.counters_beside or {}).items()
                  if len(k) <= STAT_NAME_CHARS_MAX and " " not in k}
        counters = tuple(sorted((self.counters | gauges | beside).items()))
        pred, successors, fingers = self._stat_topology()
        pages = max(1, -(-max(len(counters), len(fingers)) // STAT_ITEMS_PER_PAGE))
        if page is not None:
            start = page * STAT_ITEMS_PER_PAGE
            counters, fingers = counters[start:start + STAT_ITEMS_PER_PAGE], fingers[start:start + STAT_ITEMS_PER_PAGE]
        return StatAns(self.me.node_id, pred, successors, fingers, len(self.storage), self._replication_pending(),
                       counters, page or 0, pages)

    # ------------------------------------------------------------------ requests we send

    def _new_handle(self) -> int:
        handle = self._next_handle
        self._next_handle += 1
        return handle

    def _user_request(self, code: Code, body: Body, resource: int, now_ms: int, first_hop: Addr | None,
                      handle: int | None = None) -> int:
        """`handle`: one reserved before (`_new_handle`), for a request that may be done before this returns."""
        return self._originate(code, body, Dest(DestKind.RESOURCE, resource), now_ms, first_hop, handle)

    def _originate(self, code: Code, body: Body, dest: Dest, now_ms: int, first_hop: Addr | None,
                   handle: int | None = None) -> int:
        return self._originate_to(code, body, (dest,), now_ms, first_hop, handle)

    def _originate_to(self, code: Code, body: Body, dest: tuple[Dest, ...], now_ms: int,
                      first_hop: Addr | None, handle: int | None = None) -> int:
        """Send a request of our user's; the handle its RequestCompleted event will carry."""
        if self.state is not State.JOINED:
            raise LocalProtocolError(f"{code.name} in state {self.state.value}")
        self._check_fits(code, body, dest[-1].id)
        handle = self._new_handle() if handle is None else handle
        self._request(code, body, dest, User(handle, body if isinstance(body, Fetch) else None), now_ms,
                      target=first_hop)
        return handle

    def _check_fits(self, code: Code, body: Body, resource: int) -> None:
        """Refuse a request a peer would drop: one outside the codec's bounds, or one
        that would outgrow a datagram on its way, as every hop adds to the via list."""
        try:
            body_bytes = check_body(code, body)
        except DecodeError as e:
            raise LocalProtocolError(f"request out of bounds ({e.reason})") from e
        if _widest_envelope_bytes(self.config.overlay_id, code) + body_bytes > DATAGRAM_BYTES_MAX:
            raise LocalProtocolError("request exceeds one datagram")

    def _request(self, code: Code, body: Body, dest: tuple[Dest, ...], purpose: Purpose, now_ms: int, *,
                 target: Addr | None = None, transmissions_max: int | None = None) -> int | None:
        """Send a request of ours; `target` fixes the first hop, else it is routed. Its transaction
        id, or None when it was finished at once (here, or refused)."""
        if self._rpc.is_full():
            self.counters["rpc_full"] += 1
            self._finish(purpose, None, now_ms, timed_out=False)
            return None
        txid = int.from_bytes(self._entropy(8), "big")
        reply_to = STAMP_ME if self.config.direct_response else None
        msg = Message(TTL_INITIAL, (self.me.node_id,), dest, txid, code, body, None, reply_to)
        routed = any(d.kind is DestKind.RESOURCE for d in dest)
        if target is None:
            hop = self._next_hop(dest)
            if hop is None:
                self._finish_here(msg, purpose, now_ms)
                return None
            if isinstance(hop, Error):
                self._finish(purpose, self._local_answer(msg, Code.ERROR, hop), now_ms)
                return None
            self._rpc.open(msg, purpose, None, now_ms=now_ms, routed=routed)
            self._send_routed(msg, dest, hop, frozenset(), now_ms)
            return txid
        self._rpc.open(msg, purpose, target, now_ms=now_ms, routed=routed, transmissions_max=transmissions_max)
        self._send(msg, target)
        return txid

    def _finish_here(self, msg: Message, purpose: Purpose, now_ms: int) -> None:
        """We are the destination of our own request: run it without the network."""
        code, body = self._request_handlers[msg.code](msg, self.me, now_ms)
        self._finish(purpose, self._local_answer(msg, code, body), now_ms)
        self._push_replicas(now_ms)

    def _local_answer(self, msg: Message, code: Code, body: Body) -> Message:
        return Message(TTL_INITIAL, (self.me.node_id,), (), msg.txid, code, body)

    def _retransmit(self, pending: Pending[Purpose], now_ms: int) -> None:
        self.counters["retransmitted"] += 1
        req = pending.request
        if pending.target is not None:
            self._send(Message(req.ttl, req.via, req.dest, req.txid, req.code, req.body), pending.target)
            return
        hop = self._next_hop(req.dest)  # the route may have been repaired meanwhile
        if isinstance(hop, Route):
            # Symmetric return this time: a direct answer may be what got lost.
            self._send_routed(Message(req.ttl, req.via, req.dest, req.txid, req.code, req.body), req.dest, hop,
                              frozenset(), now_ms)
        elif hop is None:
            self._rpc.close(pending.request.txid)
            self._finish_here(pending.request, pending.purpose, now_ms)

    def _send(self, msg: Message, addr: Addr) -> None:
        data = encode(msg, self.config.overlay_id)
        self.counters[_SENT[msg.code]] += 1
        self.counters[_BYTES[msg.code]] += len(data)
        self._outbox.append((data, addr))

    def _finish(self, purpose: Purpose, answer: Message | None, now_ms: int, *, timed_out: bool = True,
                silent_since_ms: int | None = None) -> None:
        """`silent_since_ms`: when the request that timed out was first sent. A node we heard
        from since is alive, only lossy (its socket flooded, say): not declared failed."""
        if answer is None and timed_out and isinstance(purpose, Direct):
            heard_ms = self._heard.get(purpose.node.node_id)
            if silent_since_ms is not None and heard_ms is not None and heard_ms > silent_since_ms:
                self.counters["alive_but_lossy"] += 1
            else:
                self._node_failed(purpose.node.node_id, now_ms)
        self._answer_handlers[type(purpose)](purpose, answer, now_ms)

    # ------------------------------------------------------------------ answers to our requests

    def _done_user(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, User)
        if answer is None:
            self._completed(purpose.handle, TIMED_OUT, 0, None)
            return
        if self.config.attach:
            self._peer_answered_ms = now_ms
        responder = answer.via[-1] if answer.via else None
        body = answer.body
        if purpose.fetch is not None and isinstance(body, FetchAns) and responder is not None:
            refusal = self._fetched_refusal(purpose.fetch, body, now_ms)
            if refusal is not None:
                if purpose.replica + 1 < self.config.replicas:
                    # The replicas follow the responsible node on the ring: ask the next one.
                    nxt = User(purpose.handle, purpose.fetch, purpose.replica + 1)
                    self._request(Code.FETCH, purpose.fetch, (Dest(DestKind.RESOURCE, (responder + 1) % RING),),
                                  nxt, now_ms)
                    return
                body = Error(ErrorCode.FORBIDDEN, f"every replica answered falsely: {refusal.reason}")
            elif purpose.handle == self._revocations_fetch and purpose.replica + 1 < self.config.replicas:
                # A revoked node that holds them could answer with nothing: every replica is asked.
                self._learn_revocations(body.entries)
                nxt = User(purpose.handle, purpose.fetch, purpose.replica + 1)
                self._request(Code.FETCH, purpose.fetch, (Dest(DestKind.RESOURCE, (responder + 1) % RING),), nxt,
                              now_ms)
                return
        self._completed(purpose.handle, body, max(0, len(answer.via) - 1), responder)

    def _fetched_refusal(self, fetch: Fetch, answer: FetchAns, now_ms: int) -> Refusal | None:
        """Why a fetched answer is not to be believed (counted), or None."""
        if not self.config.signed_values:
            return None
        refusal = answer_refusal(answer, fetch.resource, fetch.kind, self._checks, now_ms + self._wall_offset_ms)
        if refusal is not None:
            self.counters[f"refused.fetched_{refusal.counter}"] += 1
        return refusal

    def _completed(self, handle: int, body: Body, hops: int, responder: int | None) -> None:
        """A command of ours is done: its answer, or the Error it ended with."""
        if handle == self._revocations_fetch:
            self._revocations_fetch = None
            if isinstance(body, FetchAns):
                self._learn_revocations(body.entries)  # checked by _fetched_refusal: the authority's
            return
        error = body if isinstance(body, Error) else None
        self._events.append(RequestCompleted(handle, None if error else body, error, hops, responder))

    def _next_bootstrap(self, purpose: Bootstrap, answer: Message | None, now_ms: int) -> None:
        """The bootstrap peer asked did not let us in: ask the next, or give up."""
        if purpose.index + 1 < len(purpose.bootstrap):
            self._send_join(Bootstrap(purpose.bootstrap, purpose.index + 1), now_ms)
            return
        self.state = State.IDLE
        reason = answer.body.reason if answer and isinstance(answer.body, Error) else "no bootstrap answered"
        self._events.append(JoinFailed(reason))

    def _done_probe(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, Probe)
        self._in_flight.discard(("probe", purpose.node.node_id))
        if answer is not None and isinstance(answer.body, Error) and answer.body.code == ErrorCode.LEAVING:
            self._forget_departed(purpose.node, now_ms)  # it has left, or routes nothing now

    def _done_farewell(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        if isinstance(purpose, Handover):
            handing = (purpose.key, purpose.node.node_id)
            self._handing[handing] -= 1
            if self._handing[handing] <= 0:
                del self._handing[handing]
                self._send_handovers(now_ms)
        self._maybe_left()

    def _hand_over(self, handovers: Sequence[tuple[NodeInfo, Key]], now_ms: int) -> None:
        """Leaving: each value to the node that takes it over, a window at a time like replica
        pushes (thousands at once overran the receiver's socket, and most were lost)."""
        self._handovers.extend(handovers)
        self._send_handovers(now_ms)

    def _send_handovers(self, now_ms: int) -> None:
        while self._handovers and len(self._handing) < REPLICA_PUSHES_IN_FLIGHT_MAX:
            node, key = self._handovers.popleft()
            parts = self._store_to(node, key, Handover(node, key), now_ms)
            if parts:
                self._handing[(key, node.node_id)] += parts

    def _joined(self, now_ms: int) -> None:
        self.state = State.JOINED
        self._events.append(Joined(self.me.node_id))
        if self.config.reach_check and (self.config.attach or not self.config.client):
            self._reach.schedule(now_ms + 2 * self._timing.maintenance_interval_ms)  # once neighbours are known
        if not self.config.client:
            self._maintenance_ms = now_ms + self._timing.maintenance_interval_ms
        elif self.config.attach:
            self._maintenance_ms = now_ms + self._keepalive_ms

    # ------------------------------------------------------------------ reachability (reachability.py)

    def _check_reach(self, now_ms: int) -> None:
        if self._reach.expire(now_ms):
            self.counters["reach.unreachable"] += 1
        if self._reach.due_ms is None or now_ms < self._reach.due_ms:
            return
        if self.state is not State.JOINED:  # leaving: no more tests (a due time left in the past would spin)
            self._reach.schedule(None)
            return
        if self.config.client:
            ask = self._admitting
        else:
            successors = self._successor_nodes()
            ask = successors[0].addr if successors else None
        txid = self._request(Code.REACH, EMPTY, (), Reaching(), now_ms, target=ask) if ask is not None else None
        self._reach.asked(txid, now_ms)

    def _on_reach(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        """Try to reach the asker from our other port: one datagram, to where its REACH came from."""
        if len(msg.via) != 1:  # only the asker's own datagram says where the asker is
            return Code.ERROR, Error(ErrorCode.BAD_REQUEST, "a reach test is asked of a neighbour, not routed")
        back = Message(1, (self.me.node_id,), (Dest(DestKind.NODE, sender.node_id),), msg.txid, Code.REACH_BACK,
                       EMPTY)
        self._from_other_port.append((encode(back, self.config.overlay_id), sender.addr))
        self.counters["sent.REACH_BACK"] += 1
        return Code.REACH_ANS, EMPTY

    def _done_reaching(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        if answer is not None and answer.code is Code.REACH_ANS:
            self._reach.answered(now_ms)
        else:
            self._reach.not_answered(now_ms)

    # ------------------------------------------------------------------ an attached client

    def _attach(self, candidates: tuple[Addr, ...], index: int, now_ms: int) -> None:
        self._in_flight.add(("attach", 0))
        self._request(Code.ATTACH, EMPTY, (), Attaching(candidates, index), now_ms, target=candidates[index])

    def _keep_attached(self, now_ms: int) -> None:
        """The keepalive: an ATTACH to our peer (the next candidate if it stays silent)."""
        if ("attach", 0) not in self._in_flight and self._attachment is not None:
            self._attach(self._attachment.candidates(), 0, now_ms)

    def _done_attaching(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, Attaching) and self._attachment is not None
        self._in_flight.discard(("attach", 0))
        if answer is not None and isinstance(answer.body, AttachAns) and answer.via:
            self._peer_answered_ms = now_ms
            peer = NodeInfo(answer.via[-1], purpose.candidates[purpose.index])
            self._admitting = peer.addr
            self._keepalive_ms = max(1000, min(self._timing.client_keepalive_ms, answer.body.keepalive_s * 1000))
            changed = self._attachment.attached(peer, answer.body.alternates)
            if self.state is State.JOINING:
                self._joined(now_ms)
            if changed:
                self.counters["attached"] += 1
                self._events.append(Attached(peer.node_id, peer.addr))
            return
        self.counters["attach_failed"] += 1
        if purpose.index + 1 < len(purpose.candidates):
            self._attach(purpose.candidates, purpose.index + 1, now_ms)
        elif self.state is State.JOINING:
            self.state = State.IDLE
            self._events.append(JoinFailed("no peer admitted this client"))
        # else: attached before, nobody answers now; the next keepalive tries them all again

    def _probe(self, node: NodeInfo, now_ms: int) -> None:
        """Ping `node` unless a ping is already out; silence removes it everywhere."""
        if ("probe", node.node_id) in self._in_flight:
            return
        self._in_flight.add(("probe", node.node_id))
        self._request(Code.PING, EMPTY, (Dest(DestKind.NODE, node.node_id),), Probe(node), now_ms,
                      target=node.addr)

    # ------------------------------------------------------------------ replication

    def _store_to(self, node: NodeInfo, key: Key, purpose: Purpose, now_ms: int) -> int:
        """Push what we hold under `key` to `node`: how many requests that took (0: we hold nothing)."""
        body = self.storage.as_store(key, now_ms=now_ms)
        if body is None:
            return 0
        parts = self._split_to_fit(body, node.node_id)
        for part in parts:
            self._request(Code.STORE, part, (Dest(DestKind.NODE, node.node_id),), purpose, now_ms, target=node.addr)
        return len(parts)

    def _push_replicas(self, now_ms: int) -> None:
        """Send the copies the topology wants, as many as the window lets out."""
        self._replicas.push_due(lambda key, node: self._store_to(node, key, ReplicaPush(node, key), now_ms) > 0,
                                now_ms=now_ms)

    def _replica_pushed(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        """A copy's push ended: book it, back off a node that is full, send the next (any other
        failure asks for a new look at every key next round)."""
        assert isinstance(purpose, ReplicaPush)
        # DATA_TOO_OLD: it holds a newer copy than ours, which is as good as holding ours.
        held = answer is not None and (isinstance(answer.body, StoreAns) or (
            isinstance(answer.body, Error) and answer.body.code == ErrorCode.DATA_TOO_OLD))
        self._replicas.sent(purpose.key, purpose.node.node_id, held)
        full = answer is not None and isinstance(answer.body, Error) and answer.body.code in _FULL
        if full:
            self._replicas.refused_full(purpose.node.node_id, now_ms=now_ms)
        elif not held:
            self._replicas.dirty = True
        self._push_replicas(now_ms)

    def _split_to_fit(self, body: Store, node_id: int) -> list[Store]:
        """Halve a replica store until each part fits one datagram."""
        probe = Message(TTL_INITIAL, (self.me.node_id,), (Dest(DestKind.NODE, node_id),), 0, Code.STORE, body)
        if len(body.entries) <= 1 or len(encode(probe, self.config.overlay_id)) <= DATAGRAM_BYTES_MAX:
            return [body]
        half = len(body.entries) // 2
        return [
            *self._split_to_fit(Store(body.resource, body.kind, body.model, body.entries[:half], True), node_id),
            *self._split_to_fit(Store(body.resource, body.kind, body.model, body.entries[half:], True), node_id),
        ]

    # ------------------------------------------------------------------ leaving

    def _maybe_left(self) -> None:
        if self.state is State.LEAVING and not self._handovers and not any(
            isinstance(p.purpose, Farewell) for p in self._rpc.in_flight()
        ):
            self._set_left()

    def _set_left(self) -> None:
        self.state = State.LEFT
        self._maintenance_ms = None
        self._events.append(Left())
