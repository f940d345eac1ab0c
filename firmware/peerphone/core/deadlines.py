"""One deadline per key, earliest first: the timer wheel of every sans-I/O state machine.

A key's deadline can move or go at any time; the heap keeps stale rows and skips
them when they surface, so setting and dropping are O(log n) and `next_ms` is
amortised O(1). Ties go in the order the deadlines were set, which keeps the
simulator deterministic without ordering the keys themselves.
"""

from __future__ import annotations

import heapq
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    def __init__(self) -> None:
        self._at: dict[K, int] = {}
        self._heap: list[tuple[int, int, K]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: K) -> bool:
        return key in self._at

    def set(self, key: K, deadline_ms: int) -> None:
        if self._at.get(key) == deadline_ms:
            return
        self._at[key] = deadline_ms
        self._seq += 1
        heapq.heappush(self._heap, (deadline_ms, self._seq, key))

    def discard(self, key: K) -> None:
        self._at.pop(key, None)

    def next_ms(self) -> int | None:
        heap = self._heap
        while heap:
            deadline, _, key = heap[0]
            if self._at.get(key) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def pop_due(self, now_ms: int) -> list[K]:
        """The keys whose deadline has come, earliest first; they are dropped."""
        due: list[K] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            deadline, _, key = heapq.heappop(heap)
            if self._at.get(key) == deadline:
                del self._at[key]
                due.append(key)
        return due

    def clear(self) -> None:
        self._at.clear()
        self._heap.clear()
