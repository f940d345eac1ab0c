"""Certificates an enrolled overlay's authority withdrew, and how every peer comes to know
(issue 15; RFC 6940 leaves the means to the enrollment server).

The authority (`peerphone ca revoke`, offline but for that one store) writes one entry per
withdrawn certificate under a well-known resource of kind REVOCATION, sealed with its own
key: the access rule (access.py) lets no other key write there, and a reader believes no
other. Every peer of an enrolled overlay fetches that resource when it joins and then
every `Timing.revocation_check_ms`, and the peers that store it learn at once. What a peer
learned it keeps while it runs, even after the entries expire (their lifetime is at most
`LIFETIME_S_MAX`: the authority stores them again): it refuses the certificate's proofs,
takes its node id out of its tables, drops its answers and refuses values its key sealed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ids import ID_BITS, id_from_bytes, id_from_name, id_to_bytes
from .ingress import BoundedLru
from .limits import PUBLIC_KEY_BYTES, REVOCATIONS_KEPT_MAX
from .security import Credential
from .wire.messages import Entry

REVOCATIONS = id_from_name("peerphone:revocations")  # the resource the authority writes them under
SERIAL_BYTES = 20  # RFC 5280 §4.1.2.2: a serial number is at most 20 octets
_ID_BYTES = ID_BITS // 8


@dataclass(frozen=True, slots=True)
class Revocation:
    """One withdrawn certificate: its serial, and the node id and key it bound (so a peer
    can take the node out of its tables and refuse its seals without the certificate)."""

    serial: int
    node_id: int
    public_key: bytes

    @classmethod
    def of(cls, credential: Credential) -> "Revocation":
        return cls(credential.serial, credential.node_id, credential.public_key)

    def entry(self, storage_time_ms: int, lifetime_s: int) -> Entry:
        """Its entry under REVOCATIONS (a dictionary keyed by serial), not yet sealed."""
        return Entry(self.serial.to_bytes(SERIAL_BYTES, "big"), id_to_bytes(self.node_id) + self.public_key,
                     storage_time_ms, lifetime_s)


def read_revocation(entry: Entry) -> Revocation | None:
    """The revocation an entry holds, or None for anything else (a tombstone, bad bytes)."""
    key, value = entry.key, entry.value
    if not (isinstance(key, bytes) and len(key) == SERIAL_BYTES and isinstance(value, bytes)
            and len(value) == _ID_BYTES + PUBLIC_KEY_BYTES):
        return None
    return Revocation(int.from_bytes(key, "big"), id_from_bytes(value[:_ID_BYTES]), value[_ID_BYTES:])


class Revoked:
    """What one node knows was withdrawn: by serial, node id and key. Bounded; past the bound
    the longest known is forgotten (by then the authority has revoked thousands)."""

    def __init__(self) -> None:
        self._serials: BoundedLru[int, Revocation] = BoundedLru(REVOCATIONS_KEPT_MAX)
        self._node_ids: BoundedLru[int, bool] = BoundedLru(REVOCATIONS_KEPT_MAX)
        self._keys: BoundedLru[bytes, bool] = BoundedLru(REVOCATIONS_KEPT_MAX)

    def __len__(self) -> int:
        return len(self._serials)

    def add(self, revocation: Revocation) -> bool:
        """True when it is news."""
        if self._serials.get(revocation.serial) is not None:
            return False
        self._serials.put(revocation.serial, revocation)
        self._node_ids.put(revocation.node_id, True)
        self._keys.put(revocation.public_key, True)
        return True

    def covers(self, credential: Credential) -> bool:
        return self._serials.get(credential.serial) is not None or self.key(credential.public_key)

    def node(self, node_id: int) -> bool:
        return self._node_ids.get(node_id) is not None

    def key(self, public_key: bytes) -> bool:
        return self._keys.get(public_key) is not None

    def node_ids(self) -> list[int]:
        return [r.node_id for r in self._serials.values()]
