"""Which copies of our keys other nodes have acknowledged: the one bookkeeping of replication.

Both DHTs keep each value on a replica set (Chord: the responsible node's successors;
Kademlia: the XOR-closest nodes) and push a copy to each member that has not
acknowledged one. The tracker remembers the acknowledgements per key and the pushes in
flight, so a copy is pushed once, not once a round; and whether a change of neighbours
asks for a new look at every key (`dirty`, taken once a maintenance round). It decides
nothing about who should hold what: that is the topology's.

Pushes are paced: the topology says which copies it wants, and at most
REPLICA_PUSHES_IN_FLIGHT_MAX go out at once, the next as each one ends, so a peer with
thousands of keys never buries its successor in one burst (which dropped datagrams, timed
out, and had a live successor declared dead). A node that answers that it is full is left
alone for a while instead of being asked again every round.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from .limits import FULL_BACKOFF_MS, REPLICA_PUSHES_IN_FLIGHT_MAX
from .storage import Key
from .wire.messages import NodeInfo


class ReplicaTracker:
    def __init__(self) -> None:
        self._held: dict[Key, set[int]] = {}
        self._sending: set[tuple[Key, int]] = set()
        self._wanted: OrderedDict[tuple[Key, int], NodeInfo] = OrderedDict()  # to push, in order
        self._full_until: dict[int, int] = {}  # node id -> when to try it again (it said it was full)
        self._pushing = False  # a push that fails at once ends inside push_due: no second loop
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

    def forget_node(self, node_id: int) -> None:
        """`node_id` left or failed: what it held is gone with it. Should it come back under
        the same id (a handset that was a client for a while), it is owed every copy again."""
        for holders in self._held.values():
            holders.discard(node_id)
        for wanted in [w for w in self._wanted if w[1] == node_id]:
            del self._wanted[wanted]

    def restart(self, key: Key) -> None:
        """A new value under `key`: nobody holds this one yet."""
        self._held[key] = set()

    def in_flight(self) -> int:
        return len(self._sending) + len(self._wanted)

    def want(self, key: Key, node: NodeInfo) -> None:
        """`node` should get a copy of `key` (pushed by `push_due`, in turn)."""
        if self.needs(key, node.node_id):
            self._wanted[(key, node.node_id)] = node

    def push_due(self, send: Callable[[Key, NodeInfo], bool], *, now_ms: int) -> None:
        """Send wanted copies while fewer than the window are in flight; `send` is False when
        there was nothing to send (the key is gone)."""
        if self._pushing:
            return
        self._pushing = True
        try:
            while self._wanted and len(self._sending) < REPLICA_PUSHES_IN_FLIGHT_MAX:
                (key, node_id), node = self._wanted.popitem(last=False)
                if self._full_until.get(node_id, 0) > now_ms or not self.needs(key, node_id):
                    continue  # asked again once a round finds it missing, after the back-off
                self._sending.add((key, node_id))
                if not send(key, node):
                    self._sending.discard((key, node_id))
        finally:
            self._pushing = False

    def refused_full(self, node_id: int, *, now_ms: int) -> None:
        """`node_id` is full: no copies for it for a while, whatever else wants them."""
        self._full_until[node_id] = now_ms + FULL_BACKOFF_MS
        for wanted in [w for w in self._wanted if w[1] == node_id]:
            del self._wanted[wanted]
        if len(self._full_until) > 64:
            self._full_until = {n: t for n, t in self._full_until.items() if t > now_ms}

    def take_dirty(self, *, now_ms: int) -> bool:
        """Whether every key needs a new look this round: neighbours changed, a push failed,
        or a full node's back-off has ended (what it did not get is wanted again)."""
        ended = [node_id for node_id, until_ms in self._full_until.items() if until_ms <= now_ms]
        for node_id in ended:
            del self._full_until[node_id]
        dirty, self.dirty = self.dirty or bool(ended), False
        return dirty

    def forget_absent(self, present: Callable[[Key], bool]) -> list[Key]:
        """Drop what we know of keys no longer stored here; the keys dropped."""
        gone = [key for key in self._held if not present(key)]
        for key in gone:
            del self._held[key]
        for wanted in [w for w in self._wanted if not present(w[0])]:
            del self._wanted[wanted]
        return gone
