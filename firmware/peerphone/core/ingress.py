"""Bounded per-source state at the front door (STYLE.md habit 4): nothing a remote
sender does can make these tables grow past their limit."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLru(Generic[K, V]):
    """A dict that forgets its least recently written key beyond `size_max`."""

    def __init__(self, size_max: int) -> None:
        self._size_max = size_max
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._size_max:
            self._items.popitem(last=False)

    def oldest(self) -> tuple[K, V] | None:
        return next(iter(self._items.items()), None)

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def values(self) -> list[V]:
        return list(self._items.values())


def network_of(host: str) -> str:
    """The network a host sits in for rate limits: its /24 (IPv4) or /64 (IPv6), where one
    sender can take any address it likes."""
    if ":" not in host:
        return host.rpartition(".")[0]
    try:
        return ipaddress.IPv6Address(host.split("%")[0]).exploded[:19]
    except ValueError:
        return host


class TokenBuckets(Generic[K]):
    """Per-source token buckets: `rate_per_s` sustained, `burst` at once."""

    def __init__(self, rate_per_s: int, burst: int, sources_max: int) -> None:
        self._rate_per_ms = rate_per_s / 1000.0
        self._burst = float(burst)
        self._buckets: BoundedLru[K, tuple[float, int]] = BoundedLru(sources_max)

    def allow(self, source: K, *, now_ms: int) -> bool:
        tokens = self._tokens(source, now_ms)
        allowed = tokens >= 1.0
        self._buckets.put(source, (tokens - 1.0 if allowed else tokens, now_ms))
        return allowed

    def would_allow(self, source: K, *, now_ms: int) -> bool:
        """Whether `allow` would, without taking a token (for limits that count only failures)."""
        return self._tokens(source, now_ms) >= 1.0

    def _tokens(self, source: K, now_ms: int) -> float:
        tokens, last_ms = self._buckets.get(source) or (self._burst, now_ms)
        return min(self._burst, tokens + (now_ms - last_ms) * self._rate_per_ms)
