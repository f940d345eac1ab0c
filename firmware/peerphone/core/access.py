"""Who may store what (RFC 6940 §7.3; DESIGN.md, "Data the overlay keeps"), checked twice:
by the storing peer before it stores, and by the reader after it fetches, so a storing peer
that alters what it holds is caught.

Every entry carries its writer's seal (`security.seal`). Owners are first come, first
served: the first signer of a resource owns it while any entry of it lives, removals
(tombstones) included. An ad-hoc overlay has nothing better to bind a name to a key; a
registration's owner is its user's key, which every front holding the user's password
derives alike, so a phone may register at any of them.

A seal's signed lifetime, counted from its storage time on the writer's wall clock, ends
its value everywhere: an old value replayed after that is refused, and a replay before
that loses to the newer value or tombstone its owner stored since.

In an enrolled overlay the authority's key alone writes revocations, and a key it revoked
(revocation.py) writes nothing any more and is believed nowhere. There, names are not first
come, first served: a registration is stored only when its signer's ticket from the
authority is stored under the same name (names.py), each entry its writer's; a replica's
copy too (the tickets are stored first, and each holder keeps them in that order). A reader
checks again: the SIP front believes only registrations sealed by a key a ticket it fetched
names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from .limits import STORAGE_TIME_AHEAD_MAX_MS
from .names import ticket_holds
from .revocation import Revoked
from .security import VerifiedSeals, seal_holds
from .storage import Storage
from .usages import Kind
from .wire.messages import ARRAY_APPEND, DataModel, Entry, FetchAns, Store


class Rule(Enum):
    OWNER = "owner"    # one signer for the whole resource: registrations, a single value
    APPEND = "append"  # anyone appends; an entry is changed or removed by its writer or the recipient
    ENTRY = "entry"    # each entry its own owner: a service several nodes announce under one key
    AUTHORITY = "authority"  # the enrollment authority's key only (none in an ad-hoc overlay)
    TICKET = "ticket"  # each entry an authority's ticket for the resource, sealed by the key it names
    NAMED = "named"    # each entry its own owner, a key a ticket under the same resource names


_RULES: dict[int, Rule] = {Kind.LIST: Rule.APPEND, Kind.MAP: Rule.ENTRY, Kind.OFFLINE_MESSAGE: Rule.APPEND,
                           Kind.GATEWAY: Rule.ENTRY, Kind.REVOCATION: Rule.AUTHORITY, Kind.NAME: Rule.TICKET}


def rule_of(kind: int, enrolled: bool = False) -> Rule:
    if kind in (Kind.SIP_REGISTRATION, Kind.GATEWAY) and enrolled:  # a user's, or a service's
        return Rule.NAMED
    return _RULES.get(kind, Rule.OWNER)


class Refusal(NamedTuple):
    counter: str  # counted as refused.<counter>
    reason: str


UNSIGNED = Refusal("unsigned", "an entry without a valid signature of its writer")
EXPIRED = Refusal("expired", "an entry past the lifetime its writer signed")
NOT_OWNER = Refusal("not_owner", "this resource belongs to another key")
NOT_AUTHORITY = Refusal("not_authority", "only the overlay's enrollment authority writes this")
REVOKED = Refusal("revoked", "signed with a key the overlay's authority revoked")
BAD_TICKET = Refusal("bad_ticket", "not a ticket of the overlay's authority for this name and the key that sealed it")
NOT_NAMED = Refusal("not_named", "no ticket of the overlay's authority names this key for this name")


@dataclass(frozen=True)
class Checks:
    """What one node checks entries against: its overlay, the authority's key (None: ad hoc),
    the keys it knows were revoked, and the seals it verified before."""

    overlay_id: int
    authority: bytes | None = None
    revoked: Revoked = field(default_factory=Revoked)
    verified: VerifiedSeals | None = None

    @property
    def enrolled(self) -> bool:
        return self.authority is not None


def store_refusal(req: Store, storage: Storage, checks: Checks, wall_ms: int) -> Refusal | None:
    """Why `req` may not be stored here, or None."""
    refusal = _entries_refusal(req.entries, req.resource, req.kind, req.model, checks, wall_ms)
    if refusal is not None:
        return refusal
    signers = {e.seal.signer for e in req.entries if e.seal is not None}
    key = (req.resource, req.kind)
    rule = rule_of(req.kind, checks.enrolled)
    if rule is Rule.AUTHORITY:
        return None  # _entries_refusal saw every entry signed by the authority
    if rule is Rule.OWNER:
        owner = storage.owner_of(key)
        return NOT_OWNER if len(signers | ({owner} if owner is not None else set())) > 1 else None
    names = storage.signers((req.resource, Kind.NAME)) if checks.enrolled else set()
    if rule is Rule.NAMED and not signers <= names:
        return NOT_NAMED
    for e in req.entries:
        if e.key == ARRAY_APPEND or e.seal is None:
            continue
        held = storage.signer_of(key, e.key)
        allowed = {held}
        if rule is Rule.APPEND:  # the recipient
            allowed |= names if checks.enrolled else {storage.owner_of((req.resource, Kind.SIP_REGISTRATION))}
        if held is not None and e.seal.signer not in allowed:
            return NOT_OWNER
    return None


def answer_refusal(answer: FetchAns, resource: int, kind: int, checks: Checks, wall_ms: int) -> Refusal | None:
    """Why a reader must not believe `answer` (then it asks another replica), or None."""
    if answer.model is None:
        return None
    refusal = _entries_refusal(answer.entries, resource, kind, answer.model, checks, wall_ms)
    if refusal is None and rule_of(kind, checks.enrolled) is Rule.OWNER \
            and len({e.seal.signer for e in answer.entries if e.seal is not None}) > 1:
        return NOT_OWNER
    return refusal


def _entries_refusal(entries: tuple[Entry, ...], resource: int, kind: int, model: DataModel, checks: Checks,
                     wall_ms: int) -> Refusal | None:
    rule = rule_of(kind, checks.enrolled)
    for e in entries:
        if e.seal is None or not seal_holds(e, checks.overlay_id, resource, kind, model, checks.verified):
            return UNSIGNED
        if rule is Rule.AUTHORITY and (checks.authority is None or e.seal.signer != checks.authority):
            return NOT_AUTHORITY
        if rule is Rule.TICKET and (
                checks.authority is None or not ticket_holds(e, checks.authority, resource, checks.verified)):
            return BAD_TICKET
        if checks.revoked.key(e.seal.signer):
            return REVOKED
        # A writer's clock may lag ours as much as it may lead (the storing peer's bound).
        if e.lifetime_s > 0 and e.storage_time_ms + e.seal.lifetime_s * 1000 + STORAGE_TIME_AHEAD_MAX_MS <= wall_ms:
            return EXPIRED
    return None
