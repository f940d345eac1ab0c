"""Logs that a flood cannot flood: each kind of line (its format and first argument, say
"node %s failed" about one node) is written at most once per interval; the next one that
gets through says how many were held back meanwhile. A bounded table of kinds, forgotten
oldest first."""

from __future__ import annotations

import logging
import time
from typing import Callable

from ..core.ingress import BoundedLru

INTERVAL_S = 10.0
KINDS_MAX = 4096
PER_FORMAT_MAX = 20  # lines of one format (whatever its arguments) per interval


class OncePerInterval(logging.Filter):
    def __init__(self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._kinds: BoundedLru[tuple[str, ...], tuple[float, int]] = BoundedLru(KINDS_MAX)
        self._formats: BoundedLru[tuple[str, ...], tuple[float, int]] = BoundedLru(KINDS_MAX)

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        first = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        template = str(record.msg)
        held_back = self._held_back((record.name, template, first), 1, now, self._kinds)
        if held_back is None:
            return False
        if self._held_back((record.name, template), PER_FORMAT_MAX, now, self._formats) is None:
            return False
        if held_back:
            record.msg = f"{template} (and {held_back} more like it in {self._interval_s:.0f} s)"
        return True

    def _held_back(self, key: tuple[str, ...], allowed: int, now: float,
                   table: "BoundedLru[tuple[str, ...], tuple[float, int]]") -> int | None:
        """None: hold this line back; else how many were held back since the last one written."""
        since, count = table.get(key) or (now - self._interval_s, 0)
        if now - since >= self._interval_s:
            table.put(key, (now, 1))
            return max(0, count - allowed)
        table.put(key, (since, count + 1))
        return 0 if count < allowed else None
