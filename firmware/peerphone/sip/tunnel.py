"""SIP through the overlay: a message cut into Tunnel-sized parts and put back together, sans-I/O.

A part is a message id (8 bytes, chosen by the sender), its index, the count of
parts, and up to `PART_BYTES_MAX` bytes of the message. Reassembly is bounded:
at most `REASSEMBLIES_MAX` messages in pieces at once, each dropped
`REASSEMBLY_TIMEOUT_MS` after its first part; a part that disagrees with the
others of its message, or claims more parts than the largest message needs,
is dropped and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..core.limits import TUNNEL_BYTES_MAX, TUNNEL_REASSEMBLIES_MAX
from .message import MESSAGE_BYTES_MAX

HEADER_BYTES = 10  # message id (8), part index, part count
MESSAGE_ID_BYTES = 8
PART_BYTES_MAX = TUNNEL_BYTES_MAX - HEADER_BYTES
PARTS_MAX = -(-MESSAGE_BYTES_MAX // PART_BYTES_MAX)
REASSEMBLIES_MAX = TUNNEL_REASSEMBLIES_MAX
REASSEMBLY_TIMEOUT_MS = 32_000


def split(data: bytes, message_id: bytes) -> list[bytes]:
    """The Tunnel payloads that carry `data` (at most MESSAGE_BYTES_MAX bytes)."""
    if len(message_id) != MESSAGE_ID_BYTES or not 0 < len(data) <= MESSAGE_BYTES_MAX:
        raise ValueError("a tunnelled message needs an 8-byte id and 1 to MESSAGE_BYTES_MAX bytes")
    chunks = [data[i:i + PART_BYTES_MAX] for i in range(0, len(data), PART_BYTES_MAX)]
    return [message_id + bytes((index, len(chunks))) + chunk for index, chunk in enumerate(chunks)]


@dataclass
class _Pieces:
    count: int
    started_ms: int
    parts: dict[int, bytes] = field(default_factory=dict)


class Reassembler:
    def __init__(self) -> None:
        self._held: dict[tuple[int, bytes], _Pieces] = {}
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._held)

    def add(self, origin: int, payload: bytes, *, now_ms: int) -> bytes | None:
        """One part from node `origin`; the whole message once its last part has come."""
        self.expire(now_ms=now_ms)
        if len(payload) <= HEADER_BYTES:
            self.counters["sip dropped: bad tunnel part"] += 1
            return None
        message_id, index, count = payload[:MESSAGE_ID_BYTES], payload[8], payload[9]
        if not index < count <= PARTS_MAX:
            self.counters["sip dropped: bad tunnel part"] += 1
            return None
        key = (origin, message_id)
        held = self._held.get(key)
        if held is None:
            if len(self._held) >= REASSEMBLIES_MAX:
                self.counters["sip dropped: too many tunnelled messages"] += 1
                return None
            held = self._held[key] = _Pieces(count, now_ms)
        if held.count != count:
            self.counters["sip dropped: bad tunnel part"] += 1
            return None
        held.parts[index] = payload[HEADER_BYTES:]
        if len(held.parts) < count:
            return None
        del self._held[key]
        return b"".join(held.parts[i] for i in range(count))

    def expire(self, *, now_ms: int) -> None:
        # Insertion order is start order: the oldest are first.
        while self._held:
            key, held = next(iter(self._held.items()))
            if held.started_ms > now_ms - REASSEMBLY_TIMEOUT_MS:
                break
            del self._held[key]
            self.counters["sip dropped: tunnelled message incomplete"] += 1
