"""One-hop routing for small overlays (Gupta, Liskov, Rodrigues, "One Hop Lookups for
Peer-to-Peer Overlays", HotOS 2003): every node knows every node, so a lookup goes
straight to the node responsible.

The ring underneath is Chord's (successor list, predecessor, stabilize), which
detects joins and failures; a node that sees one tells every member (PeerNode's
ANNOUNCE). Gupta et al. aggregate events through slice and unit leaders to bound
the bandwidth of a million-node ring; a field kit of 5 to 500 phones does not
need that, and a direct announcement reaches everyone a round trip sooner.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Iterable

from ..ids import RING
from ..wire.messages import Addr, NodeInfo
from .chord import Chord


class OneHop(Chord):
    uses_fingers = False

    def __init__(self, me: NodeInfo, successors_kept: int) -> None:
        super().__init__(me, successors_kept)
        self._members: dict[int, NodeInfo] = {}
        self._ids: list[int] = []

    def learn(self, nodes: Iterable[NodeInfo]) -> None:
        for node in nodes:
            if node.node_id == self.me.node_id:
                continue
            if node.node_id not in self._members:
                insort(self._ids, node.node_id)
            self._members[node.node_id] = node

    def members(self) -> list[NodeInfo]:
        return [self._members[i] for i in self._ids]

    def next_hop(self, target: int, avoid: frozenset[int] = frozenset()) -> tuple[NodeInfo, bool] | None:
        """The member responsible for `target` (None: us), or the next one if it is
        avoided. Membership decides, not the predecessor pointer: news of a join
        reaches us by announcement before stabilize brings it."""
        if not self._ids:
            return super().next_hop(target, avoid)
        start = bisect_left(self._ids, target)
        for k in range(len(self._ids)):
            node_id = self._ids[(start + k) % len(self._ids)]
            if node_id in avoid:
                continue
            if (node_id - target) % RING > (self.me.node_id - target) % RING:
                return None  # we come first after the target: it is ours
            return self._members[node_id], True
        return super().next_hop(target, avoid)

    def address_of(self, node_id: int) -> Addr | None:
        member = self._members.get(node_id)
        return member.addr if member is not None else super().address_of(node_id)

    def adopt_successors(self, first: NodeInfo, theirs: tuple[NodeInfo, ...] | list[NodeInfo]) -> bool:
        self.learn([first, *theirs])
        return super().adopt_successors(first, theirs)

    def set_pred(self, node: NodeInfo | None) -> bool:
        if node is not None:
            self.learn([node])
        return super().set_pred(node)

    def knows(self, node_id: int) -> bool:
        return node_id in self._members

    def remove(self, node_id: int) -> bool:
        if self._members.pop(node_id, None) is not None:
            del self._ids[bisect_left(self._ids, node_id)]
        return super().remove(node_id)
