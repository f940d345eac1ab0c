"""Events a PeerNode hands its driver (STYLE.md habit 13: past tense, frozen)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .wire.messages import Body, Error


@dataclass(frozen=True, slots=True)
class Joined:
    node_id: int


@dataclass(frozen=True, slots=True)
class Attached:
    """A client attached to a peer other than the one before (the first one, or another after
    that one stopped answering): what it registers must name this peer now."""

    peer_id: int
    addr: tuple[str, int]


@dataclass(frozen=True, slots=True)
class JoinFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class Left:
    pass


@dataclass(frozen=True, slots=True)
class NodeFailed:
    node_id: int


@dataclass(frozen=True, slots=True)
class RequestCompleted:
    """A command of ours is done. `hops` counts the request's datagrams (0: answered
    here); `responder` is the node that answered (None when nobody did)."""

    handle: int
    answer: Body | None
    error: Error | None
    hops: int
    responder: int | None


@dataclass(frozen=True, slots=True)
class Tunnelled:
    """A Tunnel request for us arrived from `origin` (once: retransmissions are absorbed);
    `via`: the origin is a client, reached back through this peer."""

    origin: int
    payload: bytes
    via: int | None = None


Event = Union[Joined, Attached, JoinFailed, Left, NodeFailed, RequestCompleted, Tunnelled]
