"""Clients attached to a peer, and a client's attachment to its peer (RFC 6940 §3.2: a client
"attaches to an admitting peer" and reaches the overlay, and is reached, only through it).

A peer keeps the clients it admitted: id -> address, forgotten when a client stays silent for
CLIENT_SILENCE_KEEPALIVES keepalive periods, at most CLIENTS_MAX of them. A request reaches
a client as [NODE peer, NODE client]: the overlay routes it to the peer by its first entry,
the peer hands it to the client's address (the one the client's own keepalives come from,
so a NAT's binding for it stays open).

A client keeps its admitting peer and the peers to try if that one stops answering: the
alternates the peer last named (its successors), then the bootstrap peers it started from.
"""

from __future__ import annotations

from .ingress import BoundedLru
from .limits import ALTERNATES_MAX, CLIENT_SILENCE_KEEPALIVES, CLIENTS_MAX
from .wire.messages import Addr, NodeInfo


class AttachedClients:
    def __init__(self, keepalive_ms: int, clients_max: int = CLIENTS_MAX) -> None:
        self.keepalive_ms = keepalive_ms
        self._clients: BoundedLru[int, tuple[Addr, int]] = BoundedLru(clients_max)  # id -> (addr, last heard)

    def heard(self, client_id: int, addr: Addr, *, now_ms: int) -> None:
        self._clients.put(client_id, (addr, now_ms))

    def address(self, client_id: int) -> Addr | None:
        """Where `client_id` is, if it is ours."""
        known = self._clients.get(client_id)
        return known[0] if known is not None else None

    def forget_silent(self, *, now_ms: int) -> None:
        """Drop the clients that missed their keepalives (the least recently heard come first)."""
        while (oldest := self._clients.oldest()) is not None and \
                now_ms - oldest[1][1] > CLIENT_SILENCE_KEEPALIVES * self.keepalive_ms:
            self._clients.pop(oldest[0])

    def __len__(self) -> int:
        return len(self._clients)


class Attachment:
    """A client's side: whom it is attached to, and whom to try next."""

    def __init__(self, bootstrap: tuple[Addr, ...]) -> None:
        self.bootstrap = bootstrap
        self.peer: NodeInfo | None = None
        self.alternates: tuple[Addr, ...] = ()

    def candidates(self) -> tuple[Addr, ...]:
        """Where to attach, best first, each once: the current peer, its alternates, the bootstrap peers."""
        order = ((self.peer.addr,) if self.peer else ()) + self.alternates + self.bootstrap
        return tuple(dict.fromkeys(order))

    def attached(self, peer: NodeInfo, alternates: tuple[NodeInfo, ...]) -> bool:
        """True when this is a different peer than before (the registrations name it)."""
        changed = self.peer is None or self.peer.node_id != peer.node_id
        self.peer = peer
        self.alternates = tuple(n.addr for n in alternates[:ALTERNATES_MAX] if n.addr != peer.addr)
        return changed
