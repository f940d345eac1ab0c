"""A tiny deterministic network for core tests: in-memory datagrams, a virtual clock.

Not the simulator (that is `peerphone.sim`): no latency model, no churn; just
enough to run many real `PeerNode`s against each other with literal times.
"""

from __future__ import annotations

import random
from collections import deque

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peerphone.core.ids import RING
from peerphone.core.limits import REPLICAS, Timing
from peerphone.core.overlay import Topology
from peerphone.core.peer import PeerConfig, PeerNode, make_peer
from peerphone.core.security import Authority, Identity, Signer, Trust, seal
from peerphone.core.wire.messages import Addr, Store
from peerphone.sim.engine import Oracle

OVERLAY = 0x5EE1
TIMING = Timing().scaled(200)


def sealed(store: Store, signer: Signer) -> Store:
    """`store` with its entries signed by `signer`, as `PeerNode.store` signs a user's."""
    entries = tuple(seal(e, OVERLAY, store.resource, store.kind, store.model, signer) for e in store.entries)
    return Store(store.resource, store.kind, store.model, entries, store.replica)


def build(n: int, seed: int = 7, topology: Topology = Topology.CHORD, timing: Timing = TIMING,
          enrolled: bool = False) -> "Ring":
    """`n` peers joined one after the other, run until their tables agree with the oracle."""
    ring = Ring(seed=seed, topology=topology, timing=timing, enrolled=enrolled)
    first = ring.add()
    for _ in range(n - 1):
        ring.add(bootstrap=first.me.addr)
        ring.run(40)
    ring.run(5000)
    assert ring.converged()
    return ring


class Ring:
    def __init__(self, seed: int = 1, latency_ms: int = 1, timing: Timing = TIMING,
                 topology: Topology = Topology.CHORD, enrolled: bool = False) -> None:
        """`enrolled`: an overlay with an enrollment authority, which assigns the node ids
        (`add` may then choose them); else ad hoc, ids from keys, without the puzzle."""
        self.rng = random.Random(seed)
        self.authority = Authority(Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))) if enrolled else None
        self.trust = Trust(self.authority.public_key) if self.authority else Trust(work_bits=0)
        self.timing = timing
        self.topology = topology
        self.now_ms = 0
        self.latency_ms = latency_ms
        self.nodes: dict[Addr, PeerNode] = {}
        self.dead: set[Addr] = set()
        self.wire: deque[tuple[int, bytes, Addr, Addr]] = deque()
        self.events: list[tuple[Addr, object]] = []
        self.strays: list[tuple[bytes, Addr]] = []  # datagrams sent to an address no node has (data, to)
        self.closed: set[Addr] = set()  # nodes behind a filter that lets in only answers to what they sent

    def add(self, node_id: int | None = None, *, bootstrap: Addr | None = None, client: bool = False,
            attach: bool = False) -> PeerNode:
        """`client`: a transient client; `attach`: an attached one (a phone that is a client)."""
        addr = ("10.0.0.%d" % (len(self.nodes) + 1), 4000)
        config = PeerConfig(OVERLAY, self.timing, client=client or attach, attach=attach, topology=self.topology,
                            trust=self.trust)
        node = make_peer(self.identity(node_id), addr, config, rng=self.rng, entropy=self.rng.randbytes,
                         now_ms=self.now_ms)
        self.nodes[addr] = node
        node.join([bootstrap] if bootstrap else [], now_ms=self.now_ms)
        self.flush(node)
        return node

    def identity(self, node_id: int | None = None) -> Identity:
        """A new identity this overlay admits; with `node_id`, the authority's with that id."""
        if self.authority is not None:
            return self.authority.enroll(self.rng.randbytes, node_id=node_id)
        if node_id is not None:
            raise ValueError("an ad-hoc node's id is its key's: Ring(enrolled=True) to choose ids")
        return Identity.ad_hoc(self.rng.randbytes, self.trust.work_bits)

    def kill(self, node: PeerNode) -> None:
        self.dead.add(node.me.addr)

    def live(self) -> list[PeerNode]:
        return [n for a, n in self.nodes.items() if a not in self.dead and not n.config.client]

    def flush(self, node: PeerNode) -> None:
        for data, to in node.datagrams_to_send():
            self.wire.append((self.now_ms + self.latency_ms, data, node.me.addr, to))
        other_port = (node.me.addr[0], node.me.addr[1] + 1)  # a port nobody ever sent to
        for data, to in node.datagrams_from_other_port():
            if to not in self.closed:
                self.wire.append((self.now_ms + self.latency_ms, data, other_port, to))
        self.events.extend((node.me.addr, e) for e in node.events())

    def step_until(self, until_ms: int) -> None:
        """Deliver datagrams and fire timers in time order up to `until_ms`."""
        while True:
            deadlines = [(d, a) for a, n in self.nodes.items() if a not in self.dead
                         for d in [n.next_deadline_ms()] if d is not None]
            next_timer = min(deadlines)[0] if deadlines else None
            next_wire = self.wire[0][0] if self.wire else None
            candidates = [t for t in (next_timer, next_wire) if t is not None and t <= until_ms]
            if not candidates:
                self.now_ms = until_ms
                return
            self.now_ms = max(self.now_ms, min(candidates))
            if next_wire is not None and next_wire <= self.now_ms:
                _, data, src, dst = self.wire.popleft()
                node = self.nodes.get(dst)
                if node is None:
                    self.strays.append((data, dst))
                if node is not None and dst not in self.dead:
                    node.receive_datagram(data, src, now_ms=self.now_ms)
                    self.flush(node)
                continue
            for deadline, addr in deadlines:
                if deadline <= self.now_ms:
                    node = self.nodes[addr]
                    node.handle_timer(now_ms=self.now_ms)
                    self.flush(node)

    def run(self, ms: int) -> None:
        self.step_until(self.now_ms + ms)

    def oracle(self) -> Oracle:
        return Oracle(sorted(n.me.node_id for n in self.live()))

    def responsible(self, target: int) -> int:
        """The live node the topology makes responsible for `target`."""
        return self.oracle().responsible(target, self.topology)

    def replica_set(self, target: int) -> list[int]:
        return self.oracle().replica_set(target, REPLICAS, self.topology)

    def neighbour(self, node: PeerNode) -> int:
        """The live node `node` should list first: its successor, or its XOR-nearest."""
        me = node.me.node_id
        if self.topology is Topology.KADEMLIA:
            return self.oracle().xor_closest(me, skip=me)
        return self.oracle().successor((me + 1) % RING)

    def converged(self) -> bool:
        """Every live node's nearest neighbours are the oracle's (ring: successor and
        predecessor; Kademlia: the XOR-nearest live node)."""
        return self.oracle().ring_errors(self.live(), self.topology, now_ms=self.now_ms) == 0
