"""The Kademlia topology (Maymounkov and Mazieres, IPTPS 2002): XOR distance, k-buckets
with a replacement cache, and the state of one iterative lookup.

Both are pure state: the node (core/kademlia.py) sends the pings and the CLOSEST
requests they ask for, and feeds the answers back.

Rules the table keeps:
- bucket i holds contacts whose XOR distance from us has bit length i+1, least
  recently seen first, at most k of them;
- a contact that does not fit waits in the bucket's replacement cache (the k most
  recently seen) while the bucket's oldest member is pinged: Kademlia keeps old
  contacts, which are the likeliest to stay (§2.2);
- a failed contact leaves its bucket at once and the freshest replacement takes its place.
"""

from __future__ import annotations

import heapq
from bisect import insort
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..._accel import ACTIVE as ACCELERATION
from ..._accel import IdTable
from ..ids import ID_BITS, ID_BYTES
from ..limits import ALPHA, K
from ..wire.messages import Addr, NodeInfo


def bucket_of(me: int, node_id: int) -> int:
    """Index of the bucket `node_id` belongs in; -1 for our own id."""
    return (me ^ node_id).bit_length() - 1


def _bucket_order(distance: int, nonempty: int) -> Iterator[int]:
    """The buckets set in `nonempty` (a bit per bucket) in order of XOR distance from
    a target at `distance` from us: its own bucket b holds the nearest contacts;
    then come the buckets below b, each before all lower ones where `distance` has
    a 1 bit and after them where it has a 0; then the buckets above b, nearest first."""
    top = distance.bit_length() - 1
    if top >= 0 and nonempty >> top & 1:
        yield top
    lower = nonempty & ((1 << top) - 1) if top >= 0 else nonempty
    after: list[int] = []
    while lower:
        index = lower.bit_length() - 1
        lower ^= 1 << index
        if distance >> index & 1:
            yield index
        else:
            after.append(index)
    yield from reversed(after)
    if top >= 0:
        higher = nonempty >> (top + 1)
        index = top + 1
        while higher:
            if higher & 1:
                yield index
            higher >>= 1
            index += 1


class KBuckets:
    def __init__(self, me: NodeInfo, k: int = K, *, packed: bool = ACCELERATION == "native") -> None:
        self.me = me
        self.k = k
        self._buckets: list[list[NodeInfo]] = [[] for _ in range(ID_BITS)]
        self._replacements: list[list[NodeInfo]] = [[] for _ in range(ID_BITS)]
        self._index: dict[int, NodeInfo] = {}
        self._nonempty = 0  # bit i set: bucket i has a member
        # With the native routines, closest() is one C scan of every contact, packed;
        # without, the bucket walk below, which touches only the buckets it needs.
        self._packed: IdTable | None = IdTable(ID_BYTES) if packed else None
        self._slot: dict[int, int] = {}
        self._by_slot: list[NodeInfo] = []
        self._touched_ms: list[int | None] = [None] * ID_BITS  # when a lookup last went into each bucket's range

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._index

    def contacts(self) -> list[NodeInfo]:
        return [n for bucket in self._buckets for n in bucket]

    def address_of(self, node_id: int) -> Addr | None:
        node = self._index.get(node_id)
        return node.addr if node is not None else None

    def seen(self, node: NodeInfo) -> tuple[bool, NodeInfo | None]:
        """`node` just talked to us: (whether it is a new contact, the bucket's oldest
        member to ping when `node` had to wait in the replacement cache)."""
        i = bucket_of(self.me.node_id, node.node_id)
        if i < 0:
            return False, None
        bucket = self._buckets[i]
        known = self._index.get(node.node_id)
        if known is not None:
            bucket.remove(known)
            bucket.append(node)  # most recently seen last; an address may have changed
            self._index[node.node_id] = node
            if self._packed is not None:
                self._by_slot[self._slot[node.node_id]] = node
            return False, None
        if len(bucket) < self.k:
            self._add(i, node)
            return True, None
        waiting = [n for n in self._replacements[i] if n.node_id != node.node_id]
        self._replacements[i] = [*waiting[-(self.k - 1):], node]
        return False, bucket[0]

    def remove(self, node_id: int) -> NodeInfo | None:
        """Forget a failed contact; returns the replacement promoted into its place."""
        i = bucket_of(self.me.node_id, node_id)
        if i < 0:
            return None
        self._replacements[i] = [n for n in self._replacements[i] if n.node_id != node_id]
        node = self._index.pop(node_id, None)
        if node is None:
            return None
        self._buckets[i].remove(node)
        if not self._buckets[i]:
            self._nonempty &= ~(1 << i)
        if self._packed is not None:
            slot = self._slot.pop(node_id)
            moved = self._packed.remove_at(slot)
            last = self._by_slot.pop()
            if moved is not None:
                self._by_slot[slot] = last
                self._slot[moved] = slot
        if not self._replacements[i]:
            return None
        promoted = self._replacements[i].pop()
        self._add(i, promoted)
        return promoted

    def _add(self, index: int, node: NodeInfo) -> None:
        self._buckets[index].append(node)
        self._index[node.node_id] = node
        self._nonempty |= 1 << index
        if self._packed is not None:
            self._slot[node.node_id] = self._packed.append(node.node_id)
            self._by_slot.append(node)

    def closest(self, target: int, count: int, avoid: Iterable[int] = ()) -> list[NodeInfo]:
        """The `count` contacts closest to `target` by XOR, closest first.

        This runs for every CLOSEST we answer. Natively, one scan of the packed ids;
        in Python, a walk of the buckets in order of their distance from the target
        that sorts only the buckets it takes."""
        skip = set(avoid)
        if self._packed is not None:
            slots = self._packed.xor_closest(target, count + len(skip))
            return [n for n in (self._by_slot[s] for s in slots) if n.node_id not in skip][:count]
        found: list[NodeInfo] = []
        for index in _bucket_order(self.me.node_id ^ target, self._nonempty):
            found.extend(sorted((n for n in self._buckets[index] if n.node_id not in skip),
                                key=lambda n: n.node_id ^ target))
            if len(found) >= count:
                break
        return found[:count]

    def touch(self, target: int, now_ms: int) -> None:
        i = bucket_of(self.me.node_id, target)
        if i >= 0:
            self._touched_ms[i] = now_ms

    def stale_buckets(self, now_ms: int, interval_ms: int) -> list[int]:
        """Buckets to refresh: not looked into for `interval_ms`, from the one of our
        closest contact outward (nearer ones are empty in any overlay we could meet)."""
        nearest = self.closest(self.me.node_id, 1)
        start = bucket_of(self.me.node_id, nearest[0].node_id) if nearest else ID_BITS - 1
        return [i for i in range(start, ID_BITS)
                if (touched := self._touched_ms[i]) is None or now_ms - touched >= interval_ms]

    def id_in_bucket(self, index: int, bits: int) -> int:
        """An id in bucket `index`'s range, its free low bits taken from `bits`."""
        prefix = (self.me.node_id >> index) ^ 1
        return (prefix << index) | (bits & ((1 << index) - 1))


@dataclass
class Lookup:
    """One iterative lookup (§2.3): ask the alpha closest unasked candidates, merge
    what they return, until the `settle` closest candidates have all answered.

    Kademlia settles on the k closest, which a join or a bucket refresh wants (it
    fills the table); a store or fetch needs only the replica set, and settling on
    that saves the rounds spent confirming the far end of the k closest.
    `depth` counts how many answers led to a node: the lookup's hop count."""

    target: int
    k: int = K
    alpha: int = ALPHA
    settle: int = K
    _candidates: dict[int, NodeInfo] = field(default_factory=dict)
    _distances: list[int] = field(default_factory=list)  # of the candidates, sorted; id = distance ^ target
    _depth: dict[int, int] = field(default_factory=dict)
    _asked: set[int] = field(default_factory=set)
    _in_flight: set[int] = field(default_factory=set)
    _slow: set[int] = field(default_factory=set)  # asked, silent past one retransmission interval
    _answered: set[int] = field(default_factory=set)
    _failed: set[int] = field(default_factory=set)

    def add(self, nodes: Iterable[NodeInfo], depth: int) -> None:
        for node in nodes:
            if node.node_id not in self._candidates:
                self._candidates[node.node_id] = node
                self._depth[node.node_id] = depth
                insort(self._distances, node.node_id ^ self.target)

    def include(self, me: NodeInfo) -> None:
        """The origin, a peer, counts among the closest without asking itself."""
        self.add([me], 0)
        self._asked.add(me.node_id)
        self._answered.add(me.node_id)

    def answered(self, node_id: int, nodes: Iterable[NodeInfo] = ()) -> None:
        if node_id in self._in_flight or node_id in self._slow:
            self._in_flight.discard(node_id)
            self._slow.discard(node_id)
            self._answered.add(node_id)
            self.add(nodes, self._depth.get(node_id, 0) + 1)

    def slow(self, node_id: int) -> None:
        """No answer yet after one interval: stop waiting on it (it may be dead), ask
        the next candidate instead, and still take its answer if one comes (§2.3)."""
        if node_id in self._in_flight:
            self._in_flight.discard(node_id)
            self._slow.add(node_id)

    def failed(self, node_id: int) -> None:
        self._in_flight.discard(node_id)
        self._slow.discard(node_id)
        self._answered.discard(node_id)
        self._failed.add(node_id)

    def _frontier(self) -> list[int]:
        """The k closest candidates still in the running."""
        frontier: list[int] = []
        for distance in self._distances:
            node_id = distance ^ self.target
            if node_id not in self._failed and node_id not in self._slow:
                frontier.append(node_id)
                if len(frontier) == self.k:
                    break
        return frontier

    def to_ask(self) -> list[NodeInfo]:
        """Candidates to send CLOSEST to now (marked asked), keeping `alpha` in flight."""
        room = self.alpha - len(self._in_flight)
        picked = []
        for node_id in self._frontier():
            if room <= 0:
                break
            if node_id not in self._asked:
                self._asked.add(node_id)
                self._in_flight.add(node_id)
                picked.append(self._candidates[node_id])
                room -= 1
        return picked

    @property
    def done(self) -> bool:
        return all(i in self._answered for i in self._frontier()[:self.settle])

    def closest(self, count: int) -> list[NodeInfo]:
        """The `count` closest nodes that answered, closest first."""
        return [self._candidates[i] for i in heapq.nsmallest(count, self._answered, key=lambda i: i ^ self.target)]

    def depth(self, node_id: int) -> int:
        return self._depth.get(node_id, 0)
