"""The pure-Python twins of the native routines (native/peerphone_native.h): the
same answers, proven equal by tests/native/test_differential.py. They run where no
C compiler was at install time, and under PEERPHONE_PURE=1."""

from __future__ import annotations

import heapq
from typing import Sequence


def xor_closest(ids: Sequence[int], target: int, k: int) -> list[int]:
    """Indices of the `k` ids closest to `target` by XOR, closest first."""
    return heapq.nsmallest(k, range(len(ids)), key=lambda i: ids[i] ^ target)
