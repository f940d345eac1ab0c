"""The Kademlia topology behind PeerNode (Maymounkov and Mazieres, IPTPS 2002).

Routing is iterative: the origin asks ALPHA nodes at a time for the nodes they
know closest to the target (CLOSEST, Kademlia's FIND_NODE) until the K closest it
has heard of have all answered; then it stores on the `replicas` closest, or
fetches from the closest that holds the value. A client sends its RESOURCE
requests to its peer, which runs the lookup for it and answers (a proxy), so
clients speak the same protocol whatever the overlay's topology.

The table learns from every request that reaches us and every answer we get. A
full bucket keeps its old members while they answer pings (§2.2); failed
contacts leave at once, replaced from the replacement cache.

Replication (§2.5): a node among the `replicas` closest it knows to a key pushes
the value to the others whenever its contacts change, and every REPUBLISH_ROUNDS
it republishes each key it has not seen stored meanwhile through a fresh lookup,
which also reaches holders its own table does not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from .errors import ErrorCode, LocalProtocolError
from .ids import ID_BITS
from .limits import (
    ALPHA,
    BODY_ITEMS_MAX,
    NEIGHBOURHOOD_ROUNDS,
    PEER_TABLE_MAX,
    PROXIES_MAX,
    REFRESH_ROUNDS,
    REFRESHES_PER_ROUND,
    REPUBLISH_ROUNDS,
    REPUBLISHES_PER_ROUND,
    STEP_TRANSMISSIONS,
    SUCCESSORS_REPORTED,
    K,
)
from .node import (
    TIMED_OUT,
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
from .overlay.kademlia import KBuckets, Lookup
from .rpc import Pending
from .security import Identity
from .storage import Key
from .wire.messages import (
    EMPTY,
    Addr,
    Body,
    Closest,
    ClosestAns,
    Code,
    Dest,
    DestKind,
    Error,
    Fetch,
    FetchAns,
    FindAns,
    Leave,
    Message,
    NodeInfo,
    Store,
    StoreAns,
)

Reply = Callable[[Code, Body, int, int | None], None]  # (code, body, hops, responder)
Then = Callable[[Lookup, int], None]


@dataclass(frozen=True, slots=True)
class _Step(Direct):
    """One CLOSEST request of lookup `run`."""

    run: int


@dataclass(frozen=True, slots=True)
class _Place(Direct):
    """A STORE or FETCH of operation `op` on one of the closest nodes."""

    op: int


@dataclass
class _Op:
    """A store or fetch on the closest nodes of a finished lookup."""

    code: Code
    body: Body
    lookup: Lookup
    reply: Reply
    targets: list[NodeInfo]
    waiting: int = 0
    result: tuple[Code, Body, NodeInfo] | None = None
    errors: list[Error] = field(default_factory=list)


class KademliaPeer(PeerNode):
    def __init__(self, me: NodeInfo, config: PeerConfig, identity: Identity, *, rng: Rng, entropy: Entropy,
                 now_ms: int, wall_offset_ms: int = 0) -> None:
        super().__init__(me, config, identity, rng=rng, entropy=entropy, now_ms=now_ms,
                         wall_offset_ms=wall_offset_ms)
        self.table = KBuckets(me, K)
        self._runs: dict[int, tuple[Lookup, Then]] = {}
        self._ops: dict[int, _Op] = {}
        self._next_id = 1
        self._proxying: set[tuple[int, int]] = set()  # (origin, txid) of client requests we run
        self._republish_ms: dict[Key, int] = {}  # when each key was last stored or republished
        self._checked: set[int] = set()  # oldest members of full buckets pinged this round
        self._rounds = 0
        self._request_handlers.update({
            Code.CLOSEST: self._on_closest,
            Code.LEAVE: self._on_leave,
        })
        self._answer_handlers.update({
            _Step: self._done_step,
            Bootstrap: self._done_join,
            _Place: self._done_place,
        })

    # ------------------------------------------------------------------ commands

    def _farewell(self, now_ms: int) -> bool:
        """Every value to the closest other nodes we know; our nearest contacts told, so they
        drop us at once."""
        self._hand_over([(node, key) for key in self.storage.keys()
                         for node in self.table.closest(key[0], self.config.replicas)], now_ms)
        for node in self.table.closest(self.me.node_id, K):
            self._request(Code.LEAVE, Leave(None, ()), (Dest(DestKind.NODE, node.node_id),), Farewell(node), now_ms,
                          target=node.addr)
        return True

    def _user_request(self, code: Code, body: Body, resource: int, now_ms: int, first_hop: Addr | None,
                      handle: int | None = None) -> int:
        if self.config.client or first_hop is not None:
            return super()._user_request(code, body, resource, now_ms, first_hop, handle)  # a peer runs it for us
        if self.state is not State.JOINED:
            raise LocalProtocolError(f"{code.name} in state {self.state.value}")
        self._check_fits(code, body, resource)
        handle = self._new_handle() if handle is None else handle
        self._operate(code, body, resource,
                      lambda code, body, hops, responder: self._completed(handle, body, hops, responder), now_ms)
        return handle

    # ------------------------------------------------------------------ topology hooks

    def _hop_for(self, dest: tuple[Dest, ...], avoid: frozenset[int] = frozenset(),
                 sender: int | None = None) -> Route | Error | None:
        """A client hands everything to its peer; a peer takes RESOURCE requests
        itself (it runs the lookup) and sends NODE requests only to contacts."""
        if not dest:
            return None
        if len(dest) != 1:
            return Error(ErrorCode.BAD_REQUEST, "unsupported destination list")
        kind, target = dest[0]
        if kind is DestKind.RESOURCE or target == self.me.node_id:
            return None
        addr = self.table.address_of(target)
        if addr is None or target in avoid:
            return Error(ErrorCode.NOT_FOUND, "no such node")
        return Route(addr, dest, target)

    def _address_of(self, node_id: int) -> Addr | None:
        return self.table.address_of(node_id)

    def _heard_from(self, sender: NodeInfo, msg: Message, now_ms: int) -> None:
        """Only peers look nodes up; a client's requests must not make it a contact,
        as it would be asked to route."""
        if msg.code is Code.CLOSEST:
            self._saw(sender, now_ms)

    def _node_failed(self, node_id: int, now_ms: int) -> None:
        if node_id == self.me.node_id or node_id not in self.table:
            return
        self.table.remove(node_id)
        self._lost(node_id)
        self._replicas.dirty = True

    def _after_store(self, key: Key, body: Store, now_ms: int) -> None:
        self._republish_ms[key] = now_ms  # somebody stored it: no need to republish it this period

    def _stat_topology(self) -> tuple[int | None, tuple[int, ...], tuple[int, ...]]:
        contacts = tuple(n.node_id for n in self.table.closest(self.me.node_id, BODY_ITEMS_MAX))
        return None, contacts[:SUCCESSORS_REPORTED], contacts

    def _replication_pending(self) -> int:
        """Copies being pushed, plus one while a change of contacts awaits the next round."""
        return self._replicas.in_flight() + (self._replicas.dirty and len(self.storage) > 0)

    def _perform(self, msg: Message, sender: NodeInfo, addr: Addr, now_ms: int) -> None:
        """A RESOURCE request from a client (or a peer that entered through us): run
        it as our own operation and answer it when that finishes."""
        if not (msg.dest and msg.dest[-1].kind is DestKind.RESOURCE and msg.code in (Code.STORE, Code.FETCH,
                                                                                      Code.FIND)):
            super()._perform(msg, sender, addr, now_ms)
            return
        key = (msg.via[0], msg.txid)
        if key in self._proxying:  # a retransmission while its lookup still runs
            self.counters["deduplicated"] += 1
            return
        if len(self._proxying) >= PROXIES_MAX:
            self._answer(msg, Code.ERROR, Error(ErrorCode.UNREACHABLE, "proxy busy"), addr, now_ms, cache=False)
            return
        self._proxying.add(key)
        self.counters["proxied"] += 1

        def reply(code: Code, body: Body, hops: int, responder: int | None) -> None:
            self._proxying.discard(key)
            self._answer(msg, code, body, addr, now_ms)

        self._operate(msg.code, msg.body, msg.dest[-1].id, reply, now_ms)

    # ------------------------------------------------------------------ request handlers

    def _on_closest(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        body = msg.body
        assert isinstance(body, Closest)
        return Code.CLOSEST_ANS, ClosestAns(tuple(self.table.closest(body.target, K, avoid=(sender.node_id,))))

    def _on_leave(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        self._check_departure(sender, now_ms)
        return Code.LEAVE_ANS, EMPTY

    def _departed(self, node: NodeInfo, now_ms: int) -> None:
        if self.table.remove(node.node_id) is not None:
            self._replicas.dirty = True

    # ------------------------------------------------------------------ contacts

    def _saw(self, node: NodeInfo, now_ms: int) -> None:
        """Kademlia's table update on every message from `node` (§2.2)."""
        if self.config.client or node.node_id == self.me.node_id:
            return
        added, oldest = self.table.seen(node)
        if added:
            self._replicas.dirty = True
        if oldest is not None and oldest.node_id not in self._checked and len(self._checked) < PEER_TABLE_MAX:
            # Silence evicts it and promotes a waiting contact. One ping a round at most
            # per contact: every lookup meets new nodes for the full far buckets.
            self._checked.add(oldest.node_id)
            self._probe(oldest, now_ms)

    # ------------------------------------------------------------------ lookups

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _lookup(self, target: int, then: Then, now_ms: int, seeds: Sequence[NodeInfo] = (), *,
                settle: int = K) -> None:
        lookup = Lookup(target, K, ALPHA, settle)
        lookup.add(self.table.closest(target, K), 1)
        lookup.add(seeds, 1)
        if not self.config.client:
            lookup.include(self.me)
        self.table.touch(target, now_ms)
        run = self._new_id()
        self._runs[run] = (lookup, then)
        self._pump(run, now_ms)

    def _pump(self, run: int, now_ms: int) -> None:
        entry = self._runs.get(run)
        if entry is None:
            return
        lookup, then = entry
        if lookup.done:
            del self._runs[run]
            then(lookup, now_ms)
            return
        for node in lookup.to_ask():
            self._request(Code.CLOSEST, Closest(lookup.target), (Dest(DestKind.NODE, node.node_id),),
                          _Step(node, run), now_ms, target=node.addr, transmissions_max=STEP_TRANSMISSIONS)

    def _retransmit(self, pending: Pending[Purpose], now_ms: int) -> None:
        super()._retransmit(pending, now_ms)
        step = pending.purpose
        if isinstance(step, _Step) and step.run in self._runs:
            self._runs[step.run][0].slow(step.node.node_id)
            self._pump(step.run, now_ms)

    def _done_step(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, _Step)
        entry = self._runs.get(purpose.run)
        if entry is None:
            return
        lookup = entry[0]
        if answer is not None and isinstance(answer.body, ClosestAns):
            self._saw(purpose.node, now_ms)
            lookup.answered(purpose.node.node_id, answer.body.nodes)
        else:
            lookup.failed(purpose.node.node_id)
        self._pump(purpose.run, now_ms)

    # ------------------------------------------------------------------ operations on the closest nodes

    def _operate(self, code: Code, body: Body, resource: int, reply: Reply, now_ms: int) -> None:
        replicas = self.config.replicas
        if isinstance(body, Store):
            body = replace(body, replica=True)  # we place every copy: the holders need not push

        def then(lookup: Lookup, now_ms: int) -> None:
            closest = lookup.closest(replicas)
            if not closest:
                reply(Code.ERROR, Error(ErrorCode.UNREACHABLE, "no node answered"), 0, None)
                return
            if code is Code.FIND:
                reply(Code.FIND_ANS, FindAns(closest[0]), lookup.depth(closest[0].node_id), closest[0].node_id)
                return
            op_id = self._new_id()
            op = _Op(code, body, lookup, reply, closest)
            self._ops[op_id] = op
            if code is Code.STORE:
                for node in closest:
                    op.waiting += 1
                    self._place(op_id, op, node, now_ms)
            else:
                op.waiting = 1
                self._place(op_id, op, closest[0], now_ms)

        self._lookup(resource, then, now_ms, settle=replicas)

    def _place(self, op_id: int, op: _Op, node: NodeInfo, now_ms: int) -> None:
        if node.node_id == self.me.node_id:
            msg = Message(1, (self.me.node_id,), (), 0, op.code, op.body)
            code, body = self._request_handlers[op.code](msg, self.me, now_ms)
            self._placed_one(op_id, node, code, body, now_ms)
        else:
            self._request(op.code, op.body, (Dest(DestKind.NODE, node.node_id),), _Place(node, op_id), now_ms,
                          target=node.addr)

    def _done_place(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, _Place)
        if answer is None:
            self._placed_one(purpose.op, purpose.node, Code.ERROR, TIMED_OUT, now_ms)
        else:
            self._placed_one(purpose.op, purpose.node, answer.code, answer.body, now_ms)

    def _placed_one(self, op_id: int, node: NodeInfo, code: Code, body: Body, now_ms: int) -> None:
        """One node answered a store or fetch: finish, or go on to the next node."""
        op = self._ops.get(op_id)
        if op is None:
            return
        op.waiting -= 1
        if isinstance(body, FetchAns) and isinstance(op.body, Fetch):
            refusal = self._fetched_refusal(op.body, body, now_ms)
            if refusal is not None:  # a lying holder: as if it held nothing, so the others are asked
                code, body = Code.ERROR, Error(ErrorCode.FORBIDDEN, refusal.reason)
        if isinstance(body, Error):
            op.errors.append(body)
        elif op.result is None or (isinstance(body, FetchAns) and body.entries):
            op.result = (code, body, node)
        if op.code is Code.STORE and isinstance(body, StoreAns):
            self._replicas.acknowledged(_key_of(op.body), node.node_id)
        if op.code is Code.FETCH and op.waiting == 0 and node == op.targets[0] and len(op.targets) > 1:
            found = op.result is not None and isinstance(op.result[1], FetchAns) and op.result[1].entries
            if not found:
                # Not on the closest (a newcomer not yet given its copy): ask the rest of
                # the replica set at once, one round trip instead of one each.
                op.waiting = len(op.targets) - 1
                for other in op.targets[1:]:
                    self._place(op_id, op, other, now_ms)
                return
        if op.waiting > 0:
            return
        del self._ops[op_id]
        if op.result is None:
            op.reply(Code.ERROR, op.errors[0] if op.errors else TIMED_OUT, 0, None)
            return
        code, body, by = op.result
        op.reply(code, body, op.lookup.depth(by.node_id), by.node_id)

    # ------------------------------------------------------------------ joining

    def _send_join(self, purpose: Bootstrap, now_ms: int) -> None:
        """Ask a bootstrap node, whose id we do not know yet, for the nodes closest to us."""
        self._request(Code.CLOSEST, Closest(self.me.node_id), (), purpose, now_ms,
                      target=purpose.bootstrap[purpose.index])

    def _done_join(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        assert isinstance(purpose, Bootstrap)
        if self.state is not State.JOINING:
            return
        if answer is None or not isinstance(answer.body, ClosestAns) or not answer.via:
            self._next_bootstrap(purpose, answer, now_ms)
            return
        self._saw(NodeInfo(answer.via[-1], purpose.bootstrap[purpose.index]), now_ms)

        def joined(lookup: Lookup, now_ms: int) -> None:
            if self.state is State.JOINING:
                self._joined(now_ms)  # buckets farther out are refreshed in the rounds that follow (§2.3)

        self._lookup(self.me.node_id, joined, now_ms, seeds=answer.body.nodes)

    # ------------------------------------------------------------------ maintenance

    def _maintain(self, now_ms: int) -> None:
        """Check our nearest contacts, refresh a stale bucket, repair replica sets
        that changed, republish."""
        self._checked.clear()
        for node in self.table.closest(self.me.node_id, self.config.replicas):
            self._probe(node, now_ms)  # they decide our replica sets: a failure must show at once
        interval = self._timing.maintenance_interval_ms
        self._rounds += 1
        if self._rounds % NEIGHBOURHOOD_ROUNDS == 0:
            self._lookup(self.me.node_id, lambda lookup, now_ms: None, now_ms)  # meet nodes that joined near us
        for index in self.table.stale_buckets(now_ms, interval * REFRESH_ROUNDS)[:REFRESHES_PER_ROUND]:
            bits = 0
            for _ in range(-(-ID_BITS // 53)):
                bits = bits << 53 | int(self._rng.random() * (1 << 53))
            target = self.table.id_in_bucket(index, bits)
            self._lookup(target, lambda lookup, now_ms: None, now_ms)
        if self._replicas.take_dirty(now_ms=now_ms):
            for key in self.storage.keys():
                for node in self._missing_copies(key):
                    self._push(node, key, now_ms)
        due = [k for k in self.storage.keys() if now_ms - self._republish_ms.get(k, 0) >= interval * REPUBLISH_ROUNDS]
        for key in due[:REPUBLISHES_PER_ROUND]:
            self._republish(key, now_ms)
        for key in self._replicas.forget_absent(self.storage.__contains__):
            self._republish_ms.pop(key, None)

    def _missing_copies(self, key: Key) -> list[NodeInfo]:
        """If we are among the `replicas` closest we know to `key`: the others of that
        set that have not acknowledged a copy."""
        others = self.table.closest(key[0], self.config.replicas)
        if len(others) == self.config.replicas and (others[-1].node_id ^ key[0]) < (self.me.node_id ^ key[0]):
            return []  # we are not among them
        return [n for n in others[:self.config.replicas - 1] if self._replicas.needs(key, n.node_id)]

    def _push(self, node: NodeInfo, key: Key, now_ms: int) -> None:
        self._replicas.want(key, node)
        self._push_replicas(now_ms)

    def _republish(self, key: Key, now_ms: int) -> None:
        self._republish_ms[key] = now_ms

        def then(lookup: Lookup, now_ms: int) -> None:
            for node in lookup.closest(self.config.replicas):
                if node.node_id != self.me.node_id and not self._replicas.is_sending(key, node.node_id):
                    self._push(node, key, now_ms)

        self._lookup(key[0], then, now_ms, settle=self.config.replicas)


def _key_of(body: Body) -> Key:
    assert isinstance(body, (Store, Fetch))
    return body.resource, body.kind
