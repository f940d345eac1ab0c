"""Overlay topologies: Chord, one-hop for small overlays (both rings), and Kademlia."""

from __future__ import annotations

from enum import Enum

from ..wire.messages import NodeInfo
from .chord import Chord
from .onehop import OneHop


class Topology(str, Enum):
    CHORD = "chord"
    ONEHOP = "onehop"
    KADEMLIA = "kademlia"


def make_topology(kind: Topology, me: NodeInfo, successors_kept: int) -> Chord:
    """The ring of a ring topology (Kademlia has k-buckets instead: overlay/kademlia.py)."""
    return OneHop(me, successors_kept) if kind is Topology.ONEHOP else Chord(me, successors_kept)
