"""The messages of the peer protocol, as frozen dataclasses (after RFC 6940 §6, §7, §9).

A message is an envelope (version, overlay id, TTL, via list, destination list,
transaction id, code, body, signature, reply-to address, hop-ack flag) and one body
per code. Requests have even
codes, their answers the next odd code; ERROR answers any request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, Union

Addr = tuple[str, int]


class Code(IntEnum):
    PING = 2
    PING_ANS = 3
    JOIN = 4
    JOIN_ANS = 5
    LEAVE = 6
    LEAVE_ANS = 7
    UPDATE = 8
    UPDATE_ANS = 9
    FIND = 10
    FIND_ANS = 11
    STORE = 12
    STORE_ANS = 13
    FETCH = 14
    FETCH_ANS = 15
    STAT = 16
    STAT_ANS = 17
    HOP_ACK = 19  # not an answer: "your datagram reached me", to the previous hop only
    ANNOUNCE = 20
    ANNOUNCE_ANS = 21
    MEMBERS = 22
    MEMBERS_ANS = 23
    CLOSEST = 24  # Kademlia's FIND_NODE: one step of an iterative lookup
    CLOSEST_ANS = 25
    TUNNEL = 26  # carries a SIP message to a node that cannot be reached directly (DESIGN.md)
    TUNNEL_ANS = 27
    ATTACH = 28  # a client to its admitting peer: take me, and keep taking me (the keepalive too)
    ATTACH_ANS = 29
    REACH = 30  # to a neighbour: try to reach me from another port (is my address open to strangers?)
    REACH_ANS = 31
    REACH_BACK = 33  # not an answer: the reach test's datagram, from the answerer's other port
    PROVE = 34  # show me your certificate and sign my challenge: how a node proves its id (security.py)
    PROVE_ANS = 35
    ERROR = 0xFFFF

    @property
    def is_request(self) -> bool:
        return self.value % 2 == 0 and self is not Code.ERROR


class DestKind(IntEnum):
    NODE = 0       # exactly this node, or an error from the node responsible for its id
    RESOURCE = 1   # whichever node is responsible for this id


class Dest(NamedTuple):
    kind: DestKind
    id: int


class DataModel(IntEnum):
    """RFC 6940 §7.2: how the entries of one (resource, kind) are organised."""

    SINGLE = 1
    ARRAY = 2
    DICTIONARY = 3


ARRAY_APPEND = 0xFFFFFFFF  # array index meaning "after the last entry" (RFC 6940 §7.4.2)

EntryKey = Union[None, int, bytes]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: int
    addr: Addr


@dataclass(frozen=True, slots=True)
class Seal:
    """Who wrote an entry, and their signature over it (`security.seal`). The lifetime the
    writer gave is signed; the entry's own `lifetime_s` counts down from one replica to the next."""

    signer: bytes  # a raw Ed25519 public key
    lifetime_s: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored value. `storage_time_ms` is the writer's wall clock: newer replaces older.
    An empty value kept alive is a removal remembered (a tombstone), so that a replayed older
    value still loses."""

    key: EntryKey
    value: bytes
    storage_time_ms: int
    lifetime_s: int
    seal: Seal | None = None


@dataclass(frozen=True, slots=True)
class Empty:
    pass


EMPTY = Empty()


@dataclass(frozen=True, slots=True)
class JoinAns:
    responder: NodeInfo
    pred: NodeInfo | None
    successors: tuple[NodeInfo, ...]


@dataclass(frozen=True, slots=True)
class UpdateAns:
    """Chord's stabilize answer: the receiver's predecessor and successor list."""

    pred: NodeInfo | None
    successors: tuple[NodeInfo, ...]


@dataclass(frozen=True, slots=True)
class Leave:
    """Sent by a leaving node to its neighbours so they can close the gap at once."""

    pred: NodeInfo | None
    successors: tuple[NodeInfo, ...]


@dataclass(frozen=True, slots=True)
class FindAns:
    responder: NodeInfo


@dataclass(frozen=True, slots=True)
class Store:
    resource: int
    kind: int
    model: DataModel
    entries: tuple[Entry, ...]
    replica: bool  # a copy pushed by the responsible node: store it, do not replicate it


@dataclass(frozen=True, slots=True)
class StoreAns:
    stored: int


@dataclass(frozen=True, slots=True)
class Fetch:
    resource: int
    kind: int


@dataclass(frozen=True, slots=True)
class FetchAns:
    model: DataModel | None  # None: nothing stored under this (resource, kind)
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Stat:
    page: int


@dataclass(frozen=True, slots=True)
class StatAns:
    """Diagnostics (RFC 6940 §10.7 in spirit): what a lab or an operator needs to see. The
    fingers and counters come a page at a time (each page one datagram, however many there
    are); `merged` puts the pages back together."""

    node_id: int
    pred: int | None
    successors: tuple[int, ...]
    fingers: tuple[int, ...]  # the distinct nodes of the finger table (this page's)
    values: int
    replication_pending: int
    counters: tuple[tuple[str, int], ...]  # this page's
    page: int = 0
    pages: int = 1

    @staticmethod
    def merged(parts: "list[StatAns]") -> "StatAns":
        """One answer of all pages (of one node, `parts` in page order)."""
        first = parts[0]
        return StatAns(first.node_id, first.pred, first.successors, tuple(f for p in parts for f in p.fingers),
                       first.values, first.replication_pending, tuple(c for p in parts for c in p.counters))


@dataclass(frozen=True, slots=True)
class Announce:
    """One-hop membership news: nodes that joined, nodes that failed or left."""

    joined: tuple[NodeInfo, ...]
    failed: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Members:
    page: int


@dataclass(frozen=True, slots=True)
class MembersAns:
    """One page of the sender's member list (one datagram each)."""

    page: int
    pages: int
    nodes: tuple[NodeInfo, ...]


@dataclass(frozen=True, slots=True)
class Closest:
    target: int


@dataclass(frozen=True, slots=True)
class ClosestAns:
    """The nodes the answerer knows closest to the target by XOR, closest first."""

    nodes: tuple[NodeInfo, ...]


@dataclass(frozen=True, slots=True)
class Tunnel:
    """Opaque bytes for the application on the destination node (a SIP message, or part of one)."""

    payload: bytes
    reply_via: int | None = None  # the sender is a client: what answers it goes through this peer, its admitting one


@dataclass(frozen=True, slots=True)
class AttachAns:
    """The admitting peer took the client: how often it wants to hear from it, and peers the
    client may attach to if this one dies (its successors, or the nodes it knows)."""

    keepalive_s: int
    alternates: tuple[NodeInfo, ...]


@dataclass(frozen=True, slots=True)
class Prove:
    """Padding as long as the proof asked for, so the answer is never larger than the request
    (a spoofed PROVE amplifies nothing)."""

    padding: bytes


@dataclass(frozen=True, slots=True)
class Proof:
    """The answerer's certificate, and its signature over the challenge (`proof_challenge`)."""

    certificate: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    reason: str


Body = Union[Empty, JoinAns, UpdateAns, Leave, FindAns, Store, StoreAns, Fetch, FetchAns, Stat, StatAns, Announce,
             Members, MembersAns, Closest, ClosestAns, Tunnel, AttachAns, Prove, Proof, Error]


@dataclass(frozen=True, slots=True)
class Message:
    ttl: int
    via: tuple[int, ...]
    dest: tuple[Dest, ...]
    txid: int
    code: Code
    body: Body
    signature: bytes | None = None
    # Direct response (after RFC 7263): when set on a request, the responder sends the
    # answer straight to this address instead of back along the via list. The first hop
    # overwrites it with the address the origin's datagram came from, so an origin need
    # not know its own address and cannot aim answers at somebody else.
    reply_to: Addr | None = None
    # Ask the next hop for a HOP_ACK, so a forwarder learns at once that a hop is dead
    # and routes around it (hop-by-hop reliability, as RFC 6940 §5.6.3 asks of UDP links).
    hop_ack: bool = False
