"""The Chord topology (Stoica et al., SIGCOMM 2001): successor list, predecessor and a
full 160-entry finger table, as seed 003 asks.

Rules the state keeps:
- `successors` is never empty; `[me]` means we are alone on the ring.
- finger i is the first live node we know at or after `me + 2**i` (None: unknown).
- we are responsible for ids in (pred, me]; alone, for every id.
- a node that failed is removed from every table at once, so no route uses it.

The routing candidates (fingers plus successors) are kept as a sorted list of
clockwise offsets from `me`, so the closest preceding node of a target is one
bisect, not a scan of 160 fingers.
"""

from __future__ import annotations

from bisect import bisect_left

from ..ids import ID_BITS, RING, in_half_open, in_open
from ..limits import REPLICAS, SUCCESSORS_KEPT
from ..wire.messages import Addr, NodeInfo


class Chord:
    uses_fingers = True
    def __init__(self, me: NodeInfo, successors_kept: int = SUCCESSORS_KEPT) -> None:
        self.me = me
        self.pred: NodeInfo | None = None
        self.successors: list[NodeInfo] = [me]
        self.fingers: list[NodeInfo | None] = [None] * ID_BITS
        self._successors_kept = successors_kept
        self._offsets: list[int] = []
        self._by_offset: list[NodeInfo] = []
        self._addresses: dict[int, Addr] = {}
        self._candidates_stale = True

    # -- queries --

    @property
    def succ(self) -> NodeInfo:
        return self.successors[0]

    @property
    def alone(self) -> bool:
        return self.succ.node_id == self.me.node_id

    def responsible(self, target: int) -> bool:
        if self.pred is not None:
            return in_half_open(target, self.pred.node_id, self.me.node_id)
        return self.alone

    def next_hop(self, target: int, avoid: frozenset[int] = frozenset()) -> tuple[NodeInfo, bool] | None:
        """Where a lookup for `target` goes next, and whether that node is responsible
        for it; None when we are (Chord fig. 5). Nodes in `avoid` (suspected dead on
        this lookup) are passed over.

        The successor list is a contiguous run of the ring, so a target inside it
        goes straight to the successor that holds it, a hop sooner than fingers do;
        if that one is avoided, the next successor holds a replica of its values.
        """
        if self.responsible(target):
            return None
        me = self.me.node_id
        if in_half_open(target, me, self.successors[-1].node_id):
            for node in self.successors:
                if in_half_open(target, me, node.node_id) and node.node_id not in avoid:
                    return node, True
        nearer = self.closest_preceding(target, avoid)
        if nearer is not None:
            return nearer, False
        # Nothing else known: the first successor not avoided, else the successor again.
        return next((s for s in self.successors if s.node_id not in avoid), self.succ), False

    def closest_preceding(self, target: int, avoid: frozenset[int] = frozenset()) -> NodeInfo | None:
        """The known node closest before `target` clockwise, other than us and `avoid`."""
        if self._candidates_stale:
            self._rebuild_candidates()
        offset = (target - self.me.node_id) % RING or RING  # our own id is a full lap away
        index = bisect_left(self._offsets, offset) - 1
        while index >= 0 and self._by_offset[index].node_id in avoid:
            index -= 1
        return self._by_offset[index] if index >= 0 else None

    def finger_start(self, index: int) -> int:
        return (self.me.node_id + (1 << index)) % RING

    def address_of(self, node_id: int) -> Addr | None:
        if self._candidates_stale:
            self._rebuild_candidates()
        return self._addresses.get(node_id)

    def distinct_fingers(self) -> list[NodeInfo]:
        seen: dict[int, NodeInfo] = {}
        for f in self.fingers:
            if f is not None:
                seen.setdefault(f.node_id, f)
        return list(seen.values())

    def replica_targets(self) -> list[NodeInfo]:
        """The next REPLICAS-1 successors: they hold copies of what we are responsible for."""
        return [s for s in self.successors[: REPLICAS - 1] if s.node_id != self.me.node_id]

    # -- changes; each returns whether the responsible range or replica set changed --

    def adopt_successors(self, first: NodeInfo, theirs: tuple[NodeInfo, ...] | list[NodeInfo]) -> bool:
        before = self.replica_targets()
        merged: list[NodeInfo] = []
        last_offset = 0
        for node in (first, *theirs):
            offset = (node.node_id - self.me.node_id) % RING
            if offset <= last_offset:
                # Back at or past us: on a ring smaller than the list, what follows is a
                # second lap, where a dead node would circulate for ever.
                break
            merged.append(node)
            last_offset = offset
            if len(merged) == self._successors_kept:
                break
        self.successors = merged or [self.me]
        self._candidates_stale = True
        return before != self.replica_targets()

    def set_pred(self, node: NodeInfo | None) -> bool:
        if node is not None and node.node_id == self.me.node_id:
            node = None
        changed = node != self.pred
        self.pred = node
        self._candidates_stale = True
        return changed

    def notify(self, candidate: NodeInfo) -> bool:
        """Chord's notify: `candidate` thinks it might be our predecessor."""
        if candidate.node_id == self.me.node_id:
            return False
        if self.pred is None or in_open(candidate.node_id, self.pred.node_id, self.me.node_id):
            changed = self.set_pred(candidate)
        elif candidate.node_id == self.pred.node_id and candidate.addr != self.pred.addr:
            changed = self.set_pred(candidate)
        else:
            changed = False
        if self.alone:
            # A ring of one that hears from a second node: that node is also our successor.
            self.adopt_successors(candidate, [])
            changed = True
        return changed

    def set_finger(self, index: int, node: NodeInfo) -> int:
        """Finger `index` is `node`; so is every later finger whose start it covers.
        Returns the next index still to fix (wraps to 0)."""
        i = index
        while i < ID_BITS and (i == index or in_half_open(self.finger_start(i), self.me.node_id, node.node_id)):
            if node.node_id == self.me.node_id:
                self.fingers[i] = None
            else:
                self.fingers[i] = node
            i += 1
        self._candidates_stale = True
        return i % ID_BITS

    def remove(self, node_id: int) -> bool:
        """Forget a failed or departed node everywhere."""
        before = (self.pred, self.replica_targets())
        if self.pred is not None and self.pred.node_id == node_id:
            self.pred = None
        remaining = [s for s in self.successors if s.node_id != node_id]
        if len(remaining) != len(self.successors):
            if not remaining:
                # Fall back on the closest finger after us, else we are alone.
                fallback = sorted(
                    (f for f in self.distinct_fingers() if f.node_id != node_id),
                    key=lambda f: (f.node_id - self.me.node_id) % RING,
                )
                remaining = fallback[:1] or [self.me]
            self.successors = remaining
        self.fingers = [None if f is not None and f.node_id == node_id else f for f in self.fingers]
        self._candidates_stale = True
        return before != (self.pred, self.replica_targets())

    # -- internals --

    def _rebuild_candidates(self) -> None:
        me = self.me.node_id
        by_offset = {
            (n.node_id - me) % RING: n
            for n in (*self.successors, *(f for f in self.fingers if f is not None))
            if n.node_id != me
        }
        self._offsets = sorted(by_offset)
        self._by_offset = [by_offset[o] for o in self._offsets]
        self._addresses = {n.node_id: n.addr for n in self._by_offset}
        if self.pred is not None:
            self._addresses[self.pred.node_id] = self.pred.addr
        self._candidates_stale = False
