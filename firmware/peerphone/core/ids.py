"""160-bit identifiers and ring arithmetic (Chord §4.1; RFC 6940 §5.2).

Ids are plain ints in [0, 2**160): arithmetic on them is the hot path of routing,
and ints keep it allocation-free. They become 20 bytes only at the wire codec.
"""

from __future__ import annotations

import hashlib

ID_BITS = 160
ID_BYTES = ID_BITS // 8
RING = 1 << ID_BITS
ID_MAX = RING - 1


def id_from_name(name: str | bytes) -> int:
    """Resource id of a name (an AOR, a key): its SHA-1, as seed 003 asks."""
    data = name.encode() if isinstance(name, str) else name
    return int.from_bytes(hashlib.sha1(data).digest(), "big")


def id_to_bytes(node_id: int) -> bytes:
    return node_id.to_bytes(ID_BYTES, "big")


def id_from_bytes(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def id_from_hex(text: object) -> int | None:
    """An id as records and Record-Routes write it (lower-case hex, `format(id, "x")`), or None
    for anything else (it comes from the network)."""
    if isinstance(text, str) and 0 < len(text) <= ID_BITS // 4 and all(c in "0123456789abcdef" for c in text):
        return int(text, 16)
    return None


def short(node_id: int) -> str:
    """First 8 hex digits: enough to tell nodes apart in logs."""
    return f"{node_id:040x}"[:8]


def distance(a: int, b: int) -> int:
    """Clockwise distance from a to b on the ring."""
    return (b - a) % RING


def in_open(x: int, a: int, b: int) -> bool:
    """x in (a, b) clockwise; (a, a) is the whole ring but a."""
    if a == b:
        return x != a
    return 0 < (x - a) % RING < (b - a) % RING


def in_half_open(x: int, a: int, b: int) -> bool:
    """x in (a, b] clockwise; (a, a] is the whole ring."""
    if a == b:
        return True
    return 0 < (x - a) % RING <= (b - a) % RING


def overlay_id_from_name(name: str) -> int:
    """32-bit overlay id that keeps overlays apart on the wire (RFC 6940 §5.3.2)."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big")
