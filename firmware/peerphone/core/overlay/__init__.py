"""Overlay topologies behind one interface: Chord, and one-hop for small overlays."""

from __future__ import annotations

from enum import Enum

from ..wire.messages import NodeInfo
from .chord import Chord
from .onehop import OneHop


class Topology(str, Enum):
    CHORD = "chord"
    ONEHOP = "onehop"


def make_topology(kind: Topology, me: NodeInfo, successors_kept: int) -> Chord:
    return OneHop(me, successors_kept) if kind is Topology.ONEHOP else Chord(me, successors_kept)
