"""The peer the drivers build: `make_peer` picks the class for the configured topology."""

from __future__ import annotations

from .kademlia_peer import KademliaPeer
from .node import Entropy, PeerConfig, PeerNode, Rng, State
from .onehop_peer import OneHopPeer
from .overlay import Topology
from .ring_peer import RingPeer
from .security import Identity
from .wire.messages import Addr, NodeInfo

__all__ = ["PeerConfig", "PeerNode", "State", "make_peer"]


def make_peer(identity: Identity, addr: Addr, config: PeerConfig, *, rng: Rng, entropy: Entropy, now_ms: int,
              wall_offset_ms: int = 0) -> PeerNode:
    """The node of `identity` (its id is the certificate's) at `addr`. `wall_offset_ms`: the
    wall clock (which writers stamp values with) minus `now_ms`."""
    cls = {Topology.KADEMLIA: KademliaPeer, Topology.ONEHOP: OneHopPeer}.get(config.topology, RingPeer)
    return cls(NodeInfo(identity.node_id, addr), config, identity, rng=rng, entropy=entropy, now_ms=now_ms,
               wall_offset_ms=wall_offset_ms)
