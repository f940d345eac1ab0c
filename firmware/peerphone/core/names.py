"""Who may act for a user name in an enrolled overlay (issue 15; RFC 6940 §13.3 binds user
names in certificates, and §7.3.1's USER-MATCH rule lets only a name's keys write under it).

A certificate names users, but it is some 400 bytes, which no stored value of one datagram
carries beside a registration. So the authority also signs, for each name it puts in a
certificate, a ticket: "the key K may act for the resource of this name" (64 bytes, made by
`ca issue`, kept in the node's state directory). The node stores its ticket under the name's
own resource, kind NAME, one entry per key, sealed with K: the storing peer of a name thus
holds the keys that may register it, beside the registrations, and refuses a registration
sealed by any other (`access.Rule.NAMED`). A reader checks the same: it fetches the tickets
and believes only registrations their keys sealed, so a storing peer that swaps in its own
cannot pass one off. An ad-hoc overlay has no authority, so no tickets: its names are first
come, first served.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ids import id_from_name, id_to_bytes
from .limits import PUBLIC_KEY_BYTES
from .security import Signer, VerifiedSeals, id_of_key, verify_once
from .wire.messages import Entry

TICKET_BYTES = 64  # an Ed25519 signature


def ticket_claim(resource: int, public_key: bytes) -> bytes:
    """What the authority signs: bound to the name's resource and the key, nothing else."""
    return f"peerphone name {resource:x} {public_key.hex()}".encode()


def issue_ticket(authority: Signer, name: str, public_key: bytes) -> bytes:
    return authority.sign(ticket_claim(id_from_name(name), public_key))


@dataclass(frozen=True, slots=True)
class NameTicket:
    """The authority's word that `public_key` may act for the name of a resource."""

    public_key: bytes
    ticket: bytes

    def entry(self, storage_time_ms: int, lifetime_s: int) -> Entry:
        """Its entry under the name's resource (a dictionary keyed by the key's id), not yet sealed."""
        return Entry(entry_key(self.public_key), self.public_key + self.ticket, storage_time_ms, lifetime_s)

    def holds(self, authority: bytes, resource: int, verified: VerifiedSeals | None = None) -> bool:
        return verify_once(authority, self.ticket, ticket_claim(resource, self.public_key), verified)


def entry_key(public_key: bytes) -> bytes:
    return id_to_bytes(id_of_key(public_key))


def read_ticket(entry: Entry) -> NameTicket | None:
    """The ticket an entry holds, or None for anything else (a tombstone, bad bytes, a key
    that is not the entry's)."""
    value = entry.value
    if not (isinstance(value, bytes) and len(value) == PUBLIC_KEY_BYTES + TICKET_BYTES):
        return None
    ticket = NameTicket(value[:PUBLIC_KEY_BYTES], value[PUBLIC_KEY_BYTES:])
    return ticket if entry.key == entry_key(ticket.public_key) else None


def ticket_holds(entry: Entry, authority: bytes, resource: int, verified: VerifiedSeals | None = None) -> bool:
    """`entry` is a ticket of the authority for `resource`, sealed by the key it names (a
    front fetches the tickets of a name for every call to it: `verified` spares the checks)."""
    ticket = read_ticket(entry)
    return ticket is not None and entry.seal is not None and entry.seal.signer == ticket.public_key \
        and ticket.holds(authority, resource, verified)
