"""Chord's ring behind PeerNode (one-hop builds on it: onehop_peer.py).

Routing is recursive (RFC 6940 §6.2): each hop appends its id to the via list
and forwards toward the destination. We chose recursive over iterative because
a lookup then costs one datagram per hop instead of a round trip per hop from
the origin, and round trips are what set fetch latency. The answer goes straight
back to the origin on the first try (direct response, RFC 7263) and retraces the
via list on retransmissions (symmetric return), which reaches a client or a node
behind NAT along the path its own request opened.

Every routed datagram asks its next hop for a HOP_ACK; a silent hop is
suspected (probed) and the request goes around it at once, long before the
origin's end-to-end retransmission, which is what keeps lookups whole under churn.

Replication: the responsible node keeps every value on its next REPLICAS-1
successors, pushing again whenever its range or its successors change.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ErrorCode
from .ids import RING, in_half_open, in_open
from .ingress import BoundedLru
from .limits import GRAVEYARD_MAX
from .node import (
    Bootstrap,
    Direct,
    Entropy,
    Farewell,
    PeerConfig,
    PeerNode,
    Purpose,
    Rng,
    Route,
    State,
)
from .overlay import make_topology
from .security import Identity
from .storage import Key
from .wire.messages import (
    EMPTY,
    Addr,
    Body,
    Code,
    Dest,
    DestKind,
    Error,
    FindAns,
    JoinAns,
    Leave,
    Message,
    NodeInfo,
    Store,
    UpdateAns,
)


@dataclass(frozen=True, slots=True)
class _Stabilize(Direct):
    pass


@dataclass(frozen=True, slots=True)
class _FixFinger(Purpose):
    index: int
    budget: int


@dataclass(frozen=True, slots=True)
class _Recall(Purpose):
    """A node we once declared failed, asked who follows us on its ring."""

    node: NodeInfo


class RingPeer(PeerNode):
    def __init__(self, me: NodeInfo, config: PeerConfig, identity: Identity, *, rng: Rng, entropy: Entropy,
                 now_ms: int, wall_offset_ms: int = 0) -> None:
        super().__init__(me, config, identity, rng=rng, entropy=entropy, now_ms=now_ms,
                         wall_offset_ms=wall_offset_ms)
        self.topology = make_topology(config.topology, me, config.successors_kept)
        # Nodes declared failed, asked again now and then: after a partition heals they
        # are how two rings that each repaired themselves find and merge into one.
        self._graveyard: BoundedLru[int, tuple[NodeInfo, int]] = BoundedLru(GRAVEYARD_MAX)
        self._finger_cursor = 0
        self._probe_cursor = 0
        self._request_handlers.update({
            Code.JOIN: self._on_join,
            Code.LEAVE: self._on_leave,
            Code.UPDATE: self._on_update,
            Code.FIND: self._on_find,
        })
        self._answer_handlers.update({
            Bootstrap: self._done_join,
            _Stabilize: self._done_stabilize,
            _FixFinger: self._done_fix_finger,
            _Recall: self._done_recall,
        })

    def _farewell(self, now_ms: int) -> bool:
        """Our values to our successor; both neighbours told, with what they need to close the gap."""
        if self.topology.alone:
            return False
        succ, pred = self.topology.succ, self.topology.pred
        self._hand_over([(succ, key) for key in self.storage.keys() if self.topology.responsible(key[0])], now_ms)
        self._request(Code.LEAVE, Leave(pred, tuple(self.topology.successors)), (Dest(DestKind.NODE, succ.node_id),),
                      Farewell(succ), now_ms, target=succ.addr)
        if pred is not None and pred.node_id != succ.node_id:
            self._request(Code.LEAVE, Leave(pred, tuple(self.topology.successors)),
                          (Dest(DestKind.NODE, pred.node_id),), Farewell(pred), now_ms, target=pred.addr)
        return True

    def _hop_for(self, dest: tuple[Dest, ...], avoid: frozenset[int] = frozenset(),
                 sender: int | None = None) -> Route | Error | None:
        """Where a request for `dest` goes next, and with which destination list:
        None means here; an Error is what to answer instead.

        Destinations are [], [NODE n], [RESOURCE t], or [NODE n, RESOURCE t]: "to n,
        which the previous node judged responsible for t" (see below)."""
        if not dest:
            return None
        if len(dest) == 2 and dest[0].kind is DestKind.NODE and dest[1].kind is DestKind.RESOURCE:
            if dest[0].id == self.me.node_id:
                return self._handed_to_me(dest[1].id, sender, avoid)
            dest = dest[1:] if dest[0].id in avoid else dest[:1]  # the judged node failed: route afresh
        elif len(dest) > 1:
            return Error(ErrorCode.BAD_REQUEST, "unsupported destination list")
        kind, target = dest[0]
        if kind is DestKind.NODE:
            if target == self.me.node_id:
                return None
            direct = self.topology.address_of(target)
            if direct is not None and target not in avoid:
                return Route(direct, dest, target)
        hop = self.topology.next_hop(target, avoid)
        if hop is None:
            return Error(ErrorCode.NOT_FOUND, "no such node") if kind is DestKind.NODE else None
        nxt, responsible = hop
        if kind is DestKind.RESOURCE and responsible:
            # As in Chord's find_successor, the node before decides who is responsible,
            # so a node whose predecessor pointer is stale cannot bounce the request back.
            return Route(nxt.addr, (Dest(DestKind.NODE, nxt.node_id), dest[0]), nxt.node_id)
        return Route(nxt.addr, dest, nxt.node_id)

    def _handed_to_me(self, target: int, sender: int | None, avoid: frozenset[int]) -> Route | None:
        """The previous node judged us responsible for `target`. If a node has joined
        between it and us (our predecessor, which the sender does not know yet), that
        node is: one step back. Otherwise we take it, even with a stale predecessor, and
        so we do when that step back found our predecessor dead (it would come back to
        us through the sender, which still lists the dead node, until the TTL ran out)."""
        pred = self.topology.pred
        if (self.topology.responsible(target) or pred is None or sender is None or pred.node_id == sender
                or pred.node_id in avoid or not in_half_open(target, sender, pred.node_id)):
            return None
        return Route(pred.addr, (Dest(DestKind.NODE, pred.node_id), Dest(DestKind.RESOURCE, target)),
                      pred.node_id)

    def _address_of(self, node_id: int) -> Addr | None:
        return self.topology.address_of(node_id)

    def _after_store(self, key: Key, body: Store, now_ms: int) -> None:
        if not body.replica:
            self._replicas.restart(key)
            self._want_copies(key)

    def _stat_topology(self) -> tuple[int | None, tuple[int, ...], tuple[int, ...]]:
        pred = self.topology.pred.node_id if self.topology.pred is not None else None
        return (pred, tuple(s.node_id for s in self.topology.successors),
                tuple(f.node_id for f in self.topology.distinct_fingers()))

    def _on_join(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        return Code.JOIN_ANS, JoinAns(self.me, self.topology.pred, tuple(self.topology.successors))

    def _on_update(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        old_pred = self.topology.pred
        if self.topology.notify(sender):
            self._pred_changed(old_pred, now_ms)
        return Code.UPDATE_ANS, UpdateAns(self.topology.pred, tuple(self.topology.successors))

    def _on_leave(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        """A neighbour says it leaves: believed once it confirms; the neighbours it names, each
        once it proves itself, are offered to the ring to close the gap."""
        body = msg.body
        assert isinstance(body, Leave)
        self._check_departure(sender, now_ms)
        for node in (*body.successors, *((body.pred,) if body.pred is not None else ())):
            if node.node_id != sender.node_id:
                self._verify(node, now_ms, offer=True)
        return Code.LEAVE_ANS, EMPTY

    def _departed(self, node: NodeInfo, now_ms: int) -> None:
        was_succ = node.node_id == self.topology.succ.node_id
        self.topology.remove(node.node_id)
        self._replicas.dirty = True
        if was_succ and self.state is State.JOINED:
            self._stabilize(now_ms)

    def _offered(self, node: NodeInfo, now_ms: int) -> None:
        """Where Chord would take `node`: as successor when it falls between us and ours, as
        predecessor by notify."""
        if self.state is not State.JOINED:
            return
        if self.topology.alone or in_open(node.node_id, self.me.node_id, self.topology.succ.node_id):
            if self.topology.adopt_successors(node, self.topology.successors):
                self._replicas.dirty = True
            self._stabilize(now_ms)
        old_pred = self.topology.pred
        if self.topology.notify(node):
            self._pred_changed(old_pred, now_ms)

    def _on_find(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        return Code.FIND_ANS, FindAns(self.me)

    def _send_join(self, purpose: Bootstrap, now_ms: int) -> None:
        self._request(Code.JOIN, EMPTY, (Dest(DestKind.RESOURCE, self.me.node_id),), purpose, now_ms,
                      target=purpose.bootstrap[purpose.index])

    def _done_join(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, Bootstrap)
        if self.state is not State.JOINING:
            return
        if answer is None or not isinstance(answer.body, JoinAns):
            self._next_bootstrap(purpose, answer, now_ms)
            return
        ans = answer.body
        self.topology.adopt_successors(ans.responder, ans.successors)
        self.topology.set_pred(ans.pred)
        self.topology.set_finger(0, ans.responder)
        self._joined(now_ms)
        self._stabilize(now_ms)

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
            self._replicas.dirty = True

    def _recall_one(self, now_ms: int) -> None:
        """Ask the longest-dead node in the graveyard who follows us on its ring."""
        oldest = self._graveyard.oldest()
        if oldest is None or ("recall", oldest[0]) in self._in_flight:
            return
        node_id, (node, keep_until_ms) = oldest
        self._graveyard.pop(node_id)
        if keep_until_ms > now_ms and not self._revoked.node(node_id):
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
                self._replicas.dirty = True
            self._stabilize(now_ms)

    def _done_fix_finger(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, _FixFinger)
        if answer is None or not isinstance(answer.body, FindAns) or self.state is not State.JOINED:
            return
        self._finger_cursor = self.topology.set_finger(purpose.index, answer.body.responder)
        if purpose.budget > 1 and self._finger_cursor != 0:
            self._fix_finger(self._finger_cursor, purpose.budget - 1, now_ms)

    def _maintain(self, now_ms: int) -> None:
        """Chord §4.6: stabilize, check neighbours, fix fingers; then replication."""
        if self.topology.alone and self.topology.pred is not None:
            self.topology.adopt_successors(self.topology.pred, [])
        self._stabilize(now_ms)
        self._probe_neighbours(now_ms)
        self._recall_one(now_ms)
        if not self.topology.alone and self.topology.uses_fingers:
            self._fix_finger(self._finger_cursor, self._timing.fingers_fixed_per_round, now_ms)
        if self._replicas.take_dirty(now_ms=now_ms):
            for key in self.storage.keys():
                self._replicate_key(key, now_ms)
        self._replicas.forget_absent(self.storage.__contains__)

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
            self._replicas.dirty = True
        addr = self.topology.address_of(node_id) or self._recent.get(node_id)
        if addr is not None:
            self._graveyard.put(node_id, (NodeInfo(node_id, addr), now_ms + self._timing.graveyard_keep_ms))
        self._lost(node_id)
        if old_pred is not None and old_pred.node_id == node_id:
            self._replicas.dirty = True
        if was_succ and self.state is State.JOINED:
            self._stabilize(now_ms)

    def _pred_changed(self, old_pred: NodeInfo | None, now_ms: int) -> None:
        """A node took over part of our range: give it what it is now responsible for."""
        self._replicas.dirty = True
        new_pred = self.topology.pred
        if new_pred is None:
            return
        for key in self.storage.keys():
            if not in_half_open(key[0], new_pred.node_id, self.me.node_id):
                self._replicas.want(key, new_pred)
        self._push_replicas(now_ms)

    def _replicate_key(self, key: Key, now_ms: int) -> None:
        self._want_copies(key)
        self._push_replicas(now_ms)

    def _want_copies(self, key: Key) -> None:
        if self.topology.responsible(key[0]):
            for node in self.topology.replica_targets():
                self._replicas.want(key, node)

    def _replication_pending(self) -> int:
        targets = [n.node_id for n in self.topology.replica_targets()]
        return sum(
            1
            for key in self.storage.keys()
            if self.topology.responsible(key[0])
            for t in targets
            if not self._replicas.holds(key, t)
        )

