"""The peer the drivers build: `make_peer` picks the class for the configured topology."""

from __future__ import annotations

from .kademlia_peer import KademliaPeer
from .node import Entropy, PeerConfig, PeerNode, Rng, State
from .onehop_peer import OneHopPeer
from .overlay import Topology
from .ring_peer import RingPeer
from .wire.messages import NodeInfo

__all__ = ["PeerConfig", "PeerNode", "State", "make_peer"]


def make_peer(me: NodeInfo, config: PeerConfig, *, rng: Rng, entropy: Entropy, now_ms: int,
              wall_offset_ms: int = 0) -> PeerNode:
    """`wall_offset_ms`: the wall clock (which writers stamp values with) minus `now_ms`."""
    cls = {Topology.KADEMLIA: KademliaPeer, Topology.ONEHOP: OneHopPeer}.get(config.topology, RingPeer)
    return cls(me, config, rng=rng, entropy=entropy, now_ms=now_ms, wall_offset_ms=wall_offset_ms)
