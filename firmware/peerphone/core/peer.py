"""PeerNode: the one facade the drivers use (the UDP driver, the simulator, the tests).

Sans-I/O in the manner of aioquic: `receive_datagram` and `handle_timer` take
`now_ms`; `datagrams_to_send`, `next_deadline_ms` and `events` hand back what to
do. Randomness (protocol choices) and entropy (transaction ids) are passed in.

Routing is recursive (RFC 6940 §6.2): each hop appends its id to the via list
and forwards toward the destination. We chose recursive over iterative because
a lookup then costs one datagram per hop instead of a round trip per hop from
the origin, and round trips are what set fetch latency. The answer goes straight
back to the origin on the first try (direct response, RFC 7263) and retraces the
via list on retransmissions (symmetric return), which reaches a client or a node
behind NAT along the path its own request opened.

Node states (a table, STYLE.md habit 7):

    IDLE    --join(no bootstrap)-->  JOINED
    IDLE    --join(bootstrap)---->   JOINING --JoinAns--> JOINED
    JOINING --all bootstraps failed-->  IDLE (JoinFailed)
    JOINED  --leave()-->  LEAVING --handover and notices answered or timed out--> LEFT

A peer answers ring requests only when JOINED or LEAVING; PING and STAT always.
Every routed datagram asks its next hop for a HOP_ACK; a silent hop is
suspected (probed) and the request goes around it at once, long before the
origin's end-to-end retransmission, which is what keeps lookups whole under churn.

Replication: the responsible node keeps every value on its next REPLICAS-1
successors, pushing again whenever its range or its successors change.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Callable, NamedTuple, Protocol, Sequence, Union

from .errors import DecodeError, ErrorCode, LocalProtocolError
from .events import Event, Joined, JoinFailed, Left, NodeFailed, RequestCompleted
from .ids import RING, in_half_open, in_open
from .ingress import BoundedLru, TokenBuckets
from .limits import (
    DATAGRAM_BYTES_MAX,
    GRAVEYARD_MAX,
    HOP_ATTEMPTS_MAX,
    INGRESS_BURST,
    INGRESS_RATE_PER_S,
    PEER_TABLE_MAX,
    RATE_SOURCES_MAX,
    STAT_COUNTERS_MAX,
    SUCCESSORS_KEPT,
    TTL_INITIAL,
    VIA_ENTRIES_MAX,
    Timing,
)
from .overlay import Topology, make_topology
from .overlay.onehop import OneHop
from .rpc import AnswerCache, Hop, HopTracker, Pending, Transactions
from .storage import Key, Storage
from .wire import decode, encode
from .wire.messages import (
    EMPTY,
    Addr,
    Announce,
    Body,
    Code,
    DataModel,
    Dest,
    DestKind,
    Entry,
    Error,
    Fetch,
    FindAns,
    JoinAns,
    Leave,
    Members,
    MembersAns,
    Message,
    NodeInfo,
    StatAns,
    Store,
    StoreAns,
    UpdateAns,
)


class _Route(NamedTuple):
    addr: Addr
    dest: tuple[Dest, ...]  # possibly rewritten: see _hop_for
    node_id: int | None     # None: a client's admitting peer, whose id it does not know


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
    # Ask for answers straight from the responder (RFC 7263) on a request's first
    # transmission; retransmissions always take the symmetric path, so an origin
    # behind a NAT that filters the direct answer loses one retransmission interval.
    direct_response: bool = True
    successors_kept: int = SUCCESSORS_KEPT  # Chord §5.2 suggests 2 log2 N against mass failure
    topology: Topology = Topology.CHORD


# -- why we sent a request: decides what its answer (or its timeout) does --

@dataclass(frozen=True, slots=True)
class _User:
    handle: int


@dataclass(frozen=True, slots=True)
class _Join:
    bootstrap: tuple[Addr, ...]
    index: int


@dataclass(frozen=True, slots=True)
class _Stabilize:
    node: NodeInfo


@dataclass(frozen=True, slots=True)
class _Probe:
    node: NodeInfo


@dataclass(frozen=True, slots=True)
class _FixFinger:
    index: int
    budget: int


@dataclass(frozen=True, slots=True)
class _Replicate:
    key: Key
    node: NodeInfo


@dataclass(frozen=True, slots=True)
class _Farewell:
    """A leave notice or a handover store: leaving waits for these."""

    node: NodeInfo


@dataclass(frozen=True, slots=True)
class _Recall:
    """A node we once declared failed, asked who follows us on its ring."""

    node: NodeInfo


@dataclass(frozen=True, slots=True)
class _Notice:
    """A one-hop membership announcement: fire and forget."""


@dataclass(frozen=True, slots=True)
class _Sync:
    """A page of a member list, pulled after joining a one-hop overlay."""


Purpose = Union[_User, _Join, _Stabilize, _Probe, _FixFinger, _Replicate, _Farewell, _Recall, _Notice, _Sync]
_DIRECT = (_Stabilize, _Probe, _Replicate, _Farewell)  # one hop to a known node: silence means it failed

_STAMP_ME: Addr = ("", 0)  # "answer me directly"; the first hop writes in the address it saw
_TIMED_OUT = Error(ErrorCode.UNREACHABLE, "timed out")
_SENT = {code: "sent." + code.name for code in Code}
_BYTES = {code: "bytes." + code.name for code in Code}
_RING_CODES = frozenset({Code.JOIN, Code.LEAVE, Code.UPDATE, Code.FIND, Code.STORE, Code.FETCH, Code.ANNOUNCE,
                         Code.MEMBERS})
MEMBERS_PER_PAGE = 20  # NodeInfos per MEMBERS_ANS: one datagram even with IPv6 addresses


class PeerNode:
    def __init__(self, me: NodeInfo, config: PeerConfig, *, rng: Rng, entropy: Entropy, now_ms: int) -> None:
        self.me = me
        self.config = config
        self.topology = make_topology(config.topology, me, config.successors_kept)
        self.storage = Storage()
        self.state = State.IDLE
        self.counters: Counter[str] = Counter()
        self._rng = rng
        self._entropy = entropy
        self._timing = config.timing
        self._rpc: Transactions[Purpose] = Transactions(config.timing)
        self._hops = HopTracker(config.timing.hop_ack_timeout_ms)
        # Nodes declared failed, asked again now and then: after a partition heals they
        # are how two rings that each repaired themselves find and merge into one.
        self._graveyard: BoundedLru[int, tuple[NodeInfo, int]] = BoundedLru(GRAVEYARD_MAX)
        self._answers = AnswerCache(config.timing.dedup_window_ms)
        self._recent: BoundedLru[int, Addr] = BoundedLru(PEER_TABLE_MAX)  # return paths
        self._rate = TokenBuckets[Addr](INGRESS_RATE_PER_S, INGRESS_BURST, RATE_SOURCES_MAX)
        self._outbox: list[tuple[bytes, Addr]] = []
        self._events: list[Event] = []
        self._next_handle = 1
        self._maintenance_ms: int | None = None
        self._finger_cursor = 0
        self._probe_cursor = 0
        self._in_flight: set[tuple[str, int]] = set()  # (task, node id): one probe at a time
        self._replicated: dict[Key, set[int]] = {}
        self._replicating: set[tuple[Key, int]] = set()
        self._replication_dirty = False
        self._admitting: Addr | None = None
        self._request_handlers: dict[Code, Callable[[Message, NodeInfo, int], tuple[Code, Body]]] = {
            Code.PING: self._on_ping,
            Code.JOIN: self._on_join,
            Code.LEAVE: self._on_leave,
            Code.UPDATE: self._on_update,
            Code.FIND: self._on_find,
            Code.STORE: self._on_store,
            Code.FETCH: self._on_fetch,
            Code.STAT: self._on_stat,
            Code.ANNOUNCE: self._on_announce,
            Code.MEMBERS: self._on_members,
        }
        self._answer_handlers: dict[type, Callable[[Purpose, Message | None, int], None]] = {
            _User: self._done_user,
            _Join: self._done_join,
            _Stabilize: self._done_stabilize,
            _Probe: self._done_probe,
            _FixFinger: self._done_fix_finger,
            _Recall: self._done_recall,
            _Replicate: self._done_replicate,
            _Farewell: self._done_farewell,
            _Notice: self._done_notice,
            _Sync: self._done_sync,
        }

    # ------------------------------------------------------------------ driver side

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._outbox = self._outbox, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def next_deadline_ms(self) -> int | None:
        deadlines = [d for d in (self._rpc.next_deadline_ms(), self._hops.next_deadline_ms(), self._maintenance_ms)
                     if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, *, now_ms: int) -> None:
        for hop in self._hops.due(now_ms=now_ms):
            self._hop_not_acked(hop, now_ms)
        resend, expired = self._rpc.due(now_ms=now_ms)
        for pending in resend:
            self._retransmit(pending, now_ms)
        for pending in expired:
            self.counters["timeouts"] += 1
            self._finish(pending.purpose, None, now_ms)
        if self._maintenance_ms is not None and now_ms >= self._maintenance_ms:
            self._maintain(now_ms)

    def receive_datagram(self, data: bytes, addr: Addr, *, now_ms: int) -> None:
        """The ingress pipeline: each stage may drop, and counts why (STYLE.md habit 4)."""
        if len(data) > DATAGRAM_BYTES_MAX:
            self._drop("oversize")
            return
        if not self._rate.allow(addr, now_ms=now_ms):
            self._drop("rate")
            return
        try:
            msg = decode(data, self.config.overlay_id)
        except DecodeError as e:
            self._drop(e.reason)
            return
        if msg.code.is_request:
            self._receive_request(msg, addr, now_ms)
        else:
            self._receive_answer(msg, now_ms)

    # ------------------------------------------------------------------ commands

    def join(self, bootstrap: Sequence[Addr], *, now_ms: int) -> None:
        if self.state is not State.IDLE:
            raise LocalProtocolError(f"join in state {self.state.value}")
        if self.config.client:
            if not bootstrap:
                raise LocalProtocolError("a client needs a peer to attach to")
            self._admitting = bootstrap[0]
            self._joined(now_ms)
            return
        if not bootstrap:
            self._joined(now_ms)
            return
        self.state = State.JOINING
        self._send_join(_Join(tuple(bootstrap), 0), now_ms)

    def leave(self, *, now_ms: int) -> None:
        """Hand our values to our successor, tell both neighbours, then report Left."""
        if self.state is not State.JOINED:
            self._set_left()
            return
        self.state = State.LEAVING
        self._maintenance_ms = None
        if self.config.client or self.topology.alone:
            self._set_left()
            return
        succ, pred = self.topology.succ, self.topology.pred
        for key in self.storage.keys():
            if self.topology.responsible(key[0]):
                self._store_to(succ, key, _Farewell(succ), now_ms)
        self._request(Code.LEAVE, Leave(pred, tuple(self.topology.successors)), (Dest(DestKind.NODE, succ.node_id),),
                      _Farewell(succ), now_ms, target=succ.addr)
        if pred is not None and pred.node_id != succ.node_id:
            self._request(Code.LEAVE, Leave(pred, tuple(self.topology.successors)),
                          (Dest(DestKind.NODE, pred.node_id),), _Farewell(pred), now_ms, target=pred.addr)
        self._maybe_left()

    def store(self, resource: int, kind: int, model: DataModel, entries: Sequence[Entry], *, now_ms: int,
              first_hop: Addr | None = None) -> int:
        body = Store(resource, kind, model, tuple(entries), False)
        return self._user_request(Code.STORE, body, resource, now_ms, first_hop)

    def fetch(self, resource: int, kind: int, *, now_ms: int, first_hop: Addr | None = None) -> int:
        return self._user_request(Code.FETCH, Fetch(resource, kind), resource, now_ms, first_hop)

    def lookup(self, target: int, *, now_ms: int, first_hop: Addr | None = None) -> int:
        """Find the node responsible for `target` (its FindAns, and `responder`)."""
        return self._user_request(Code.FIND, EMPTY, target, now_ms, first_hop)

    def stat(self, peer: Addr, *, now_ms: int) -> int:
        """Diagnostics of the peer at `peer` (an empty destination list: whoever receives it)."""
        handle = self._new_handle()
        self._request(Code.STAT, EMPTY, (), _User(handle), now_ms, target=peer)
        return handle

    def stat_local(self) -> StatAns:
        return self._on_stat_body()

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
        self._recent.put(sender.node_id, addr)
        if self.config.client or (msg.code in _RING_CODES and self.state not in (State.JOINED, State.LEAVING)):
            self._drop("state")
            return
        self._route_request(msg, sender, addr, now_ms)
        if msg.hop_ack:  # after the request moved on: the ack is not on the critical path
            self._send(Message(1, (self.me.node_id,), (), msg.txid, Code.HOP_ACK, EMPTY), addr)

    def _route_request(self, msg: Message, sender: NodeInfo, addr: Addr, now_ms: int) -> None:
        hop = self._hop_for(msg.dest, sender=sender.node_id)
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
            self._send_routed(onward, msg.dest, hop, frozenset(), now_ms)

    def _hop_for(self, dest: tuple[Dest, ...], avoid: frozenset[int] = frozenset(),
                 sender: int | None = None) -> _Route | Error | None:
        """Where a request for `dest` goes next, and with which destination list:
        None means here; an Error is what to answer instead.

        Destinations are [], [NODE n], [RESOURCE t], or [NODE n, RESOURCE t]: "to n,
        which the previous node judged responsible for t" (see below)."""
        if not dest:
            return None
        if len(dest) == 2 and dest[0].kind is DestKind.NODE and dest[1].kind is DestKind.RESOURCE:
            if dest[0].id == self.me.node_id:
                return self._handed_to_me(dest[1].id, sender)
            dest = dest[1:] if dest[0].id in avoid else dest[:1]  # the judged node failed: route afresh
        elif len(dest) > 1:
            return Error(ErrorCode.BAD_REQUEST, "unsupported destination list")
        kind, target = dest[0]
        if self.config.client:
            if self._admitting is None:
                return Error(ErrorCode.UNREACHABLE, "not attached")
            return _Route(self._admitting, dest, None)
        if kind is DestKind.NODE:
            if target == self.me.node_id:
                return None
            direct = self.topology.address_of(target)
            if direct is not None and target not in avoid:
                return _Route(direct, dest, target)
        hop = self.topology.next_hop(target, avoid)
        if hop is None:
            return Error(ErrorCode.NOT_FOUND, "no such node") if kind is DestKind.NODE else None
        nxt, responsible = hop
        if kind is DestKind.RESOURCE and responsible:
            # As in Chord's find_successor, the node before decides who is responsible,
            # so a node whose predecessor pointer is stale cannot bounce the request back.
            return _Route(nxt.addr, (Dest(DestKind.NODE, nxt.node_id), dest[0]), nxt.node_id)
        return _Route(nxt.addr, dest, nxt.node_id)

    def _handed_to_me(self, target: int, sender: int | None) -> _Route | None:
        """The previous node judged us responsible for `target`. If a node has joined
        between it and us (our predecessor, which the sender does not know yet), that
        node is: one step back. Otherwise we take it, even with a stale predecessor."""
        pred = self.topology.pred
        if (self.topology.responsible(target) or pred is None or sender is None or pred.node_id == sender
                or not in_half_open(target, sender, pred.node_id)):
            return None
        return _Route(pred.addr, (Dest(DestKind.NODE, pred.node_id), Dest(DestKind.RESOURCE, target)),
                      pred.node_id)

    def _send_routed(self, msg: Message, route: tuple[Dest, ...], hop: _Route, avoid: frozenset[int],
                     now_ms: int) -> None:
        """Send `msg` along `hop`, asking the next node for a hop ack we wait for."""
        ack = hop.node_id is not None and self._hops.track(msg, route, hop.node_id, avoid, now_ms=now_ms)
        self._send(Message(msg.ttl, msg.via, hop.dest, msg.txid, msg.code, msg.body, msg.signature, msg.reply_to,
                           ack), hop.addr)

    def _hop_not_acked(self, hop: Hop, now_ms: int) -> None:
        """The next hop stayed silent: suspect it, and send the request around it."""
        self.counters["hop_timeouts"] += 1
        suspect = self.topology.address_of(hop.next_id)
        if suspect is not None:
            self._probe(NodeInfo(hop.next_id, suspect), now_ms)
        avoid = hop.avoid | {hop.next_id}
        if len(avoid) >= HOP_ATTEMPTS_MAX:
            return  # the origin's retransmission takes over
        route = self._hop_for(hop.route, avoid)
        if isinstance(route, _Route):
            self.counters["rerouted"] += 1
            self._send_routed(hop.msg, hop.route, route, avoid, now_ms)

    def _execute(self, msg: Message, sender: NodeInfo, addr: Addr, now_ms: int) -> None:
        origin = msg.via[0]
        cached = self._answers.get(origin, msg.txid, now_ms=now_ms)
        if cached is not None:
            self.counters["deduplicated"] += 1
            self._answer(msg, cached.code, cached.body, addr, now_ms, cache=False)
            return
        code, body = self._request_handlers[msg.code](msg, sender, now_ms)
        self._answer(msg, code, body, addr, now_ms)

    def _answer(self, req: Message, code: Code, body: Body, addr: Addr, now_ms: int, *, cache: bool = True) -> None:
        """Answer `req`. The answer's via list is the request's path ending with us, so
        the origin learns the hop count and who answered (PathTrack, RFC 6940 §6.5.4)."""
        if req.reply_to is not None and len(req.via) > 1:
            back: tuple[Dest, ...] = (Dest(DestKind.NODE, req.via[0]),)
            addr = req.reply_to
        else:
            back = tuple(Dest(DestKind.NODE, v) for v in reversed(req.via))
        path = (*req.via, self.me.node_id)
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
            if not (msg.via and self._hops.acked(msg.txid, msg.via[0])):
                self._drop("unexpected_ack")
            return
        if not msg.dest or msg.dest[0] != (DestKind.NODE, self.me.node_id):
            self._drop("misrouted")
            return
        rest = msg.dest[1:]
        if not rest:
            pending = self._rpc.close(msg.txid)
            if pending is None:
                self._drop("unknown_transaction")
                return
            self._finish(pending.purpose, msg, now_ms)
            return
        nxt = rest[0]
        addr = self.topology.address_of(nxt.id) if nxt.kind is DestKind.NODE else None
        addr = addr or self._recent.get(nxt.id)
        if addr is None or msg.ttl <= 1:
            self._drop("no_return_path")
            return
        self._send(Message(msg.ttl - 1, msg.via, rest, msg.txid, msg.code, msg.body, msg.signature), addr)

    # ------------------------------------------------------------------ request handlers

    def _on_ping(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        return Code.PING_ANS, EMPTY

    def _on_join(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        return Code.JOIN_ANS, JoinAns(self.me, self.topology.pred, tuple(self.topology.successors))

    def _on_update(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        old_pred = self.topology.pred
        newcomer = isinstance(self.topology, OneHop) and not self.topology.knows(sender.node_id)
        if self.topology.notify(sender):
            self._pred_changed(old_pred, now_ms)
        if newcomer and self.topology.pred == sender:
            self._announce(Announce((sender,), ()), now_ms)  # we are its successor: we tell everyone
        return Code.UPDATE_ANS, UpdateAns(self.topology.pred, tuple(self.topology.successors))

    def _on_leave(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        assert isinstance(msg.body, Leave)
        was_succ = sender.node_id == self.topology.succ.node_id
        was_pred = self.topology.pred is not None and sender.node_id == self.topology.pred.node_id
        self.topology.remove(sender.node_id)
        if was_succ:
            heirs = [n for n in (*msg.body.successors, *self.topology.successors)
                     if n.node_id not in (self.me.node_id, sender.node_id)]
            if heirs:
                self.topology.adopt_successors(heirs[0], heirs[1:])
        if was_pred and msg.body.pred is not None:
            self.topology.set_pred(msg.body.pred)
        if was_pred and isinstance(self.topology, OneHop):
            self._announce(Announce((), (sender.node_id,)), now_ms)
        self._replication_dirty = True
        return Code.LEAVE_ANS, EMPTY

    def _on_find(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        return Code.FIND_ANS, FindAns(self.me)

    def _on_store(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        body = msg.body
        assert isinstance(body, Store)
        result = self.storage.store(body, now_ms=now_ms)
        if isinstance(result, Error):
            return Code.ERROR, result
        key = (body.resource, body.kind)
        if not body.replica:
            self._replicated[key] = set()
            self._replicate_key(key, now_ms)
        return Code.STORE_ANS, StoreAns(len(result))

    def _on_fetch(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        body = msg.body
        assert isinstance(body, Fetch)
        return Code.FETCH_ANS, self.storage.fetch(body.resource, body.kind, now_ms=now_ms)

    def _on_announce(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        body = msg.body
        assert isinstance(body, Announce)
        if isinstance(self.topology, OneHop):
            self.topology.learn(body.joined)
            for node_id in body.failed:
                if node_id != self.me.node_id and self.topology.remove(node_id):
                    self._replication_dirty = True
        return Code.ANNOUNCE_ANS, EMPTY

    def _on_members(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        body = msg.body
        assert isinstance(body, Members)
        everyone = self.topology.members() + [self.me] if isinstance(self.topology, OneHop) else [self.me]
        pages = max(1, -(-len(everyone) // MEMBERS_PER_PAGE))
        start = body.page * MEMBERS_PER_PAGE
        return Code.MEMBERS_ANS, MembersAns(body.page, pages, tuple(everyone[start:start + MEMBERS_PER_PAGE]))

    def _announce(self, news: Announce, now_ms: int) -> None:
        assert isinstance(self.topology, OneHop)
        subjects = {n.node_id for n in news.joined} | set(news.failed)
        for member in self.topology.members():
            if member.node_id not in subjects:
                self._request(Code.ANNOUNCE, news, (Dest(DestKind.NODE, member.node_id),), _Notice(), now_ms,
                              target=member.addr)

    def _on_stat(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        return Code.STAT_ANS, self._on_stat_body()

    def _on_stat_body(self) -> StatAns:
        counters = tuple(sorted(self.counters.items()))[:STAT_COUNTERS_MAX]
        pred = self.topology.pred.node_id if self.topology.pred is not None else None
        return StatAns(
            self.me.node_id,
            pred,
            tuple(s.node_id for s in self.topology.successors),
            tuple(f.node_id for f in self.topology.distinct_fingers()),
            len(self.storage),
            self._replication_pending(),
            counters,
        )

    # ------------------------------------------------------------------ requests we send

    def _new_handle(self) -> int:
        handle = self._next_handle
        self._next_handle += 1
        return handle

    def _user_request(self, code: Code, body: Body, resource: int, now_ms: int, first_hop: Addr | None) -> int:
        if self.state is not State.JOINED:
            raise LocalProtocolError(f"{code.name} in state {self.state.value}")
        probe = Message(TTL_INITIAL, (self.me.node_id,), (Dest(DestKind.RESOURCE, resource),), 0, code, body)
        if len(encode(probe, self.config.overlay_id)) > DATAGRAM_BYTES_MAX:
            raise LocalProtocolError("request exceeds one datagram")
        handle = self._new_handle()
        self._request(code, body, (Dest(DestKind.RESOURCE, resource),), _User(handle), now_ms, target=first_hop)
        return handle

    def _request(self, code: Code, body: Body, dest: tuple[Dest, ...], purpose: Purpose, now_ms: int, *,
                 target: Addr | None = None) -> None:
        """Send a request of ours; `target` fixes the first hop, else it is routed."""
        if self._rpc.is_full():
            self.counters["rpc_full"] += 1
            self._finish(purpose, None, now_ms, timed_out=False)
            return
        txid = int.from_bytes(self._entropy(8), "big")
        reply_to = _STAMP_ME if self.config.direct_response else None
        msg = Message(TTL_INITIAL, (self.me.node_id,), dest, txid, code, body, None, reply_to)
        routed = any(d.kind is DestKind.RESOURCE for d in dest)
        if target is None:
            hop = self._hop_for(dest)
            if hop is None:
                self._finish_here(msg, purpose, now_ms)
                return
            if isinstance(hop, Error):
                self._finish(purpose, self._local_answer(msg, Code.ERROR, hop), now_ms)
                return
            self._rpc.open(msg, purpose, None, now_ms=now_ms, routed=routed)
            self._send_routed(msg, dest, hop, frozenset(), now_ms)
            return
        self._rpc.open(msg, purpose, target, now_ms=now_ms, routed=routed)
        self._send(msg, target)

    def _finish_here(self, msg: Message, purpose: Purpose, now_ms: int) -> None:
        """We are the destination of our own request: run it without the network."""
        sender = self.me
        code, body = self._request_handlers[msg.code](msg, sender, now_ms)
        self._finish(purpose, self._local_answer(msg, code, body), now_ms)

    def _local_answer(self, msg: Message, code: Code, body: Body) -> Message:
        return Message(TTL_INITIAL, (self.me.node_id,), (), msg.txid, code, body)

    def _retransmit(self, pending: Pending[Purpose], now_ms: int) -> None:
        self.counters["retransmitted"] += 1
        req = pending.request
        if pending.target is not None:
            self._send(Message(req.ttl, req.via, req.dest, req.txid, req.code, req.body), pending.target)
            return
        hop = self._hop_for(req.dest)  # the route may have been repaired meanwhile
        if isinstance(hop, _Route):
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

    def _finish(self, purpose: Purpose, answer: Message | None, now_ms: int, *, timed_out: bool = True) -> None:
        if answer is None and timed_out and isinstance(purpose, _DIRECT):
            self._node_failed(purpose.node.node_id, now_ms)
        self._answer_handlers[type(purpose)](purpose, answer, now_ms)

    # ------------------------------------------------------------------ answers to our requests

    def _done_user(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, _User)
        if answer is None:
            self._events.append(RequestCompleted(purpose.handle, None, _TIMED_OUT, 0, None))
            return
        error = answer.body if isinstance(answer.body, Error) else None
        responder = answer.via[-1] if answer.via else None
        self._events.append(RequestCompleted(purpose.handle, None if error else answer.body, error,
                                             max(0, len(answer.via) - 1), responder))

    def _send_join(self, purpose: _Join, now_ms: int) -> None:
        self._request(Code.JOIN, EMPTY, (Dest(DestKind.RESOURCE, self.me.node_id),), purpose, now_ms,
                      target=purpose.bootstrap[purpose.index])

    def _done_join(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, _Join)
        if self.state is not State.JOINING:
            return
        if answer is None or not isinstance(answer.body, JoinAns):
            if purpose.index + 1 < len(purpose.bootstrap):
                self._send_join(_Join(purpose.bootstrap, purpose.index + 1), now_ms)
            else:
                self.state = State.IDLE
                reason = answer.body.reason if answer and isinstance(answer.body, Error) else "no bootstrap answered"
                self._events.append(JoinFailed(reason))
            return
        ans = answer.body
        self.topology.adopt_successors(ans.responder, ans.successors)
        self.topology.set_pred(ans.pred)
        self.topology.set_finger(0, ans.responder)
        self._joined(now_ms)
        self._stabilize(now_ms)
        if isinstance(self.topology, OneHop):
            self._sync_page(ans.responder, 0, now_ms)

    def _sync_page(self, node: NodeInfo, page: int, now_ms: int) -> None:
        self._request(Code.MEMBERS, Members(page), (Dest(DestKind.NODE, node.node_id),), _Sync(), now_ms,
                      target=node.addr)

    def _done_sync(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        if answer is None or not isinstance(answer.body, MembersAns) or not isinstance(self.topology, OneHop):
            return
        self.topology.learn(answer.body.nodes)
        if answer.body.page == 0 and answer.via:
            source = self.topology.address_of(answer.via[-1])
            for page in range(1, answer.body.pages):
                if source is not None:
                    self._sync_page(NodeInfo(answer.via[-1], source), page, now_ms)

    def _done_notice(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        pass

    def _joined(self, now_ms: int) -> None:
        self.state = State.JOINED
        self._events.append(Joined(self.me.node_id))
        if not self.config.client:
            self._maintenance_ms = now_ms + self._timing.maintenance_interval_ms

    def _done_stabilize(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, _Stabilize)
        self._in_flight.discard(("stabilize", purpose.node.node_id))
        if answer is None or not isinstance(answer.body, UpdateAns) or self.state is not State.JOINED:
            return
        if purpose.node.node_id != self.topology.succ.node_id:
            return
        ans = answer.body
        changed = self.topology.adopt_successors(purpose.node, ans.successors)
        p = ans.pred
        if p is not None and in_open(p.node_id, self.me.node_id, self.topology.succ.node_id):
            # Someone joined between us and our successor (Chord's stabilize).
            changed = self.topology.adopt_successors(p, [purpose.node, *ans.successors]) or changed
            self._stabilize(now_ms)
        if changed:
            self._replication_dirty = True

    def _done_probe(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, _Probe)
        self._in_flight.discard(("probe", purpose.node.node_id))

    def _recall_one(self, now_ms: int) -> None:
        """Ask the longest-dead node in the graveyard who follows us on its ring."""
        oldest = self._graveyard.oldest()
        if oldest is None or ("recall", oldest[0]) in self._in_flight:
            return
        node_id, (node, keep_until_ms) = oldest
        self._graveyard.pop(node_id)
        if keep_until_ms > now_ms:
            self._graveyard.put(node_id, (node, keep_until_ms))  # to the back of the queue
        self._in_flight.add(("recall", node_id))
        target = (self.me.node_id + 1) % RING
        self._request(Code.FIND, EMPTY, (Dest(DestKind.RESOURCE, target),), _Recall(node), now_ms, target=node.addr)

    def _done_recall(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, _Recall)
        self._in_flight.discard(("recall", purpose.node.node_id))
        if answer is None or not isinstance(answer.body, FindAns) or self.state is not State.JOINED:
            return
        self._graveyard.pop(purpose.node.node_id)
        found = answer.body.responder
        if found.node_id != self.me.node_id and (
                self.topology.alone or in_open(found.node_id, self.me.node_id, self.topology.succ.node_id)):
            # A node of another ring sits between us and our successor: take it, and
            # stabilize interleaves the two rings from here (Chord's join, in effect).
            self.counters["rings_merged"] += 1
            if self.topology.adopt_successors(found, self.topology.successors):
                self._replication_dirty = True
            self._stabilize(now_ms)

    def _done_fix_finger(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, _FixFinger)
        if answer is None or not isinstance(answer.body, FindAns) or self.state is not State.JOINED:
            return
        self._finger_cursor = self.topology.set_finger(purpose.index, answer.body.responder)
        if purpose.budget > 1 and self._finger_cursor != 0:
            self._fix_finger(self._finger_cursor, purpose.budget - 1, now_ms)

    def _done_replicate(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, _Replicate)
        self._replicating.discard((purpose.key, purpose.node.node_id))
        if answer is not None and isinstance(answer.body, StoreAns):
            self._replicated.setdefault(purpose.key, set()).add(purpose.node.node_id)
        else:
            self._replication_dirty = True

    def _done_farewell(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        self._maybe_left()

    # ------------------------------------------------------------------ maintenance (Chord §4.6)

    def _maintain(self, now_ms: int) -> None:
        interval = self._timing.maintenance_interval_ms
        self._maintenance_ms = now_ms + int(interval * (0.75 + 0.5 * self._rng.random()))  # no lockstep
        if self.state is not State.JOINED:
            return
        if self.topology.alone and self.topology.pred is not None:
            self.topology.adopt_successors(self.topology.pred, [])
        self._stabilize(now_ms)
        self._probe_neighbours(now_ms)
        self._recall_one(now_ms)
        if not self.topology.alone and self.topology.uses_fingers:
            self._fix_finger(self._finger_cursor, self._timing.fingers_fixed_per_round, now_ms)
        if self._replication_dirty:
            self._replication_dirty = False
            for key in self.storage.keys():
                self._replicate_key(key, now_ms)
        self.storage.expire(now_ms=now_ms)
        self._answers.expire(now_ms=now_ms)
        for key in [k for k in self._replicated if k not in self.storage]:
            del self._replicated[key]

    def _stabilize(self, now_ms: int) -> None:
        succ = self.topology.succ
        if self.topology.alone or ("stabilize", succ.node_id) in self._in_flight:
            return
        self._in_flight.add(("stabilize", succ.node_id))
        self._request(Code.UPDATE, EMPTY, (Dest(DestKind.NODE, succ.node_id),), _Stabilize(succ), now_ms,
                      target=succ.addr)

    def _probe_neighbours(self, now_ms: int) -> None:
        """Failure detection: the predecessor each round, and the distinct fingers a few
        per round in turn, so the cost per round stays flat as the overlay grows."""
        fingers = [f for f in self.topology.distinct_fingers() if f.node_id != self.topology.succ.node_id]
        count = min(len(fingers), self._timing.fingers_probed_per_round)
        start = self._probe_cursor % len(fingers) if fingers else 0
        self._probe_cursor = start + count
        nodes = [fingers[(start + i) % len(fingers)] for i in range(count)]
        if self.topology.pred is not None and self.topology.pred.node_id != self.topology.succ.node_id:
            nodes.append(self.topology.pred)  # stabilize already checks the successor
        for node in nodes:
            self._probe(node, now_ms)

    def _probe(self, node: NodeInfo, now_ms: int) -> None:
        """Ping `node` unless a ping is already out; silence removes it everywhere."""
        if ("probe", node.node_id) in self._in_flight:
            return
        self._in_flight.add(("probe", node.node_id))
        self._request(Code.PING, EMPTY, (Dest(DestKind.NODE, node.node_id),), _Probe(node), now_ms,
                      target=node.addr)

    def _fix_finger(self, index: int, budget: int, now_ms: int) -> None:
        start = self.topology.finger_start(index)
        if in_half_open(start, self.me.node_id, self.topology.succ.node_id):
            # Covered by our successor: no message needed.
            self._finger_cursor = self.topology.set_finger(index, self.topology.succ)
            if budget > 1 and self._finger_cursor != 0:
                self._fix_finger(self._finger_cursor, budget - 1, now_ms)
            return
        self._request(Code.FIND, EMPTY, (Dest(DestKind.RESOURCE, start),), _FixFinger(index, budget), now_ms)

    def _node_failed(self, node_id: int, now_ms: int) -> None:
        if node_id == self.me.node_id:
            return
        was_succ = node_id == self.topology.succ.node_id
        old_pred = self.topology.pred
        if self.topology.remove(node_id):
            self._replication_dirty = True
        addr = self.topology.address_of(node_id) or self._recent.get(node_id)
        if addr is not None:
            self._graveyard.put(node_id, (NodeInfo(node_id, addr), now_ms + self._timing.graveyard_keep_ms))
        self._recent.pop(node_id)
        self.counters["node_failed"] += 1
        self._events.append(NodeFailed(node_id))
        if old_pred is not None and old_pred.node_id == node_id:
            self._replication_dirty = True
        if was_succ and self.state is State.JOINED:
            self._stabilize(now_ms)
            if isinstance(self.topology, OneHop):
                self._announce(Announce((), (node_id,)), now_ms)  # we were its predecessor

    def _pred_changed(self, old_pred: NodeInfo | None, now_ms: int) -> None:
        """A node took over part of our range: give it what it is now responsible for."""
        self._replication_dirty = True
        new_pred = self.topology.pred
        if new_pred is None:
            return
        for key in self.storage.keys():
            if not in_half_open(key[0], new_pred.node_id, self.me.node_id):
                self._store_to(new_pred, key, _Replicate(key, new_pred), now_ms)

    # ------------------------------------------------------------------ replication

    def _replicate_key(self, key: Key, now_ms: int) -> None:
        if not self.topology.responsible(key[0]):
            return
        done = self._replicated.setdefault(key, set())
        for node in self.topology.replica_targets():
            if node.node_id in done or (key, node.node_id) in self._replicating:
                continue
            self._replicating.add((key, node.node_id))
            self._store_to(node, key, _Replicate(key, node), now_ms)

    def _store_to(self, node: NodeInfo, key: Key, purpose: Purpose, now_ms: int) -> None:
        body = self.storage.as_store(key, now_ms=now_ms)
        if body is None:
            if isinstance(purpose, _Replicate):
                self._replicating.discard((key, node.node_id))
            return
        for part in self._split_to_fit(body, node.node_id):
            self._request(Code.STORE, part, (Dest(DestKind.NODE, node.node_id),), purpose, now_ms, target=node.addr)

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

    def _replication_pending(self) -> int:
        targets = [n.node_id for n in self.topology.replica_targets()]
        return sum(
            1
            for key in self.storage.keys()
            if self.topology.responsible(key[0])
            for t in targets
            if t not in self._replicated.get(key, ())
        )

    # ------------------------------------------------------------------ leaving

    def _maybe_left(self) -> None:
        if self.state is State.LEAVING and not any(
            isinstance(p.purpose, _Farewell) for p in self._rpc.in_flight()
        ):
            self._set_left()

    def _set_left(self) -> None:
        self.state = State.LEFT
        self._maintenance_ms = None
        self._events.append(Left())
