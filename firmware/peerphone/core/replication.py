"""Which copies of our keys other nodes have acknowledged: the one bookkeeping of replication.

Both DHTs keep each value on a replica set (Chord: the responsible node's successors;
Kademlia: the XOR-closest nodes) and push a copy to each member that has not
acknowledged one. The tracker remembers the acknowledgements per key and the pushes in
flight, so a copy is pushed once, not once a round; and whether a change of neighbours
asks for a new look at every key (`dirty`, taken once a maintenance round). It decides
nothing about who should hold what: that is the topology's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .node import Direct
from .storage import Key


@dataclass(frozen=True, slots=True)
class ReplicaPush(Direct):
    """A copy of `key` stored on a node that should hold one."""

    key: Key


class ReplicaTracker:
    def __init__(self) -> None:
        self._held: dict[Key, set[int]] = {}
        self._sending: set[tuple[Key, int]] = set()
        self.dirty = False

    def needs(self, key: Key, node_id: int) -> bool:
        """`node_id` has not acknowledged a copy of `key`, and none is on its way."""
        return node_id not in self._held.get(key, ()) and (key, node_id) not in self._sending

    def holds(self, key: Key, node_id: int) -> bool:
        return node_id in self._held.get(key, ())

    def is_sending(self, key: Key, node_id: int) -> bool:
        return (key, node_id) in self._sending

    def sending(self, key: Key, node_id: int) -> None:
        self._sending.add((key, node_id))

    def sent(self, key: Key, node_id: int, acknowledged: bool) -> None:
        """A push ended: acknowledged, or to be tried again when somebody looks."""
        self._sending.discard((key, node_id))
        if acknowledged:
            self.acknowledged(key, node_id)

    def acknowledged(self, key: Key, node_id: int) -> None:
        self._held.setdefault(key, set()).add(node_id)

    def restart(self, key: Key) -> None:
        """A new value under `key`: nobody holds this one yet."""
        self._held[key] = set()

    def in_flight(self) -> int:
        return len(self._sending)

    def take_dirty(self) -> bool:
        dirty, self.dirty = self.dirty, False
        return dirty

    def forget_absent(self, present: Callable[[Key], bool]) -> list[Key]:
        """Drop what we know of keys no longer stored here; the keys dropped."""
        gone = [key for key in self._held if not present(key)]
        for key in gone:
            del self._held[key]
        return gone
