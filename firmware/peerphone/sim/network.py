"""The simulated network: latency, jitter (hence reordering), loss, duplication, partitions.

Latency is symmetric and fixed per pair without an N x N table: every host gets a
point on a unit torus and an access delay (lognormal); a datagram takes the
access delays of both ends plus the distance times `core_ms`, plus a fresh
uniform jitter, which reorders datagrams that leave close together.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NetworkModel:
    core_ms: float = 80.0            # across half the torus
    access_median_ms: float = 5.0    # per host, lognormal around this median
    access_sigma: float = 0.5
    jitter_ms: float = 2.0
    loss: float = 0.0
    duplicate: float = 0.0


@dataclass(frozen=True)
class Partition:
    """From `start_ms` to `end_ms`, hosts of different sides cannot reach each other."""

    start_ms: int
    end_ms: int
    sides: int = 2


@dataclass
class _Host:
    x: float
    y: float
    access_ms: float
    side: int


@dataclass
class Network:
    model: NetworkModel
    rng: random.Random
    partitions: list[Partition] = field(default_factory=list)
    _hosts: dict[object, _Host] = field(default_factory=dict)
    dropped: int = 0
    duplicated: int = 0

    def add_host(self, addr: object) -> None:
        m = self.model
        access = m.access_median_ms * math.exp(m.access_sigma * self.rng.gauss(0.0, 1.0))
        self._hosts[addr] = _Host(self.rng.random(), self.rng.random(), access, self.rng.randrange(1 << 30))

    def alias(self, addr: object, same_as: object) -> None:
        """`addr` is another port of the host `same_as` (a peer's SIP front)."""
        self._hosts[addr] = self._hosts[same_as]

    def deliveries(self, src: object, dst: object, now_ms: int) -> list[int]:
        """Arrival times of one datagram from `src` to `dst`: none if lost, two if duplicated."""
        a, b = self._hosts[src], self._hosts[dst]
        if self._partitioned(a, b, now_ms) or (self.model.loss and self.rng.random() < self.model.loss):
            self.dropped += 1
            return []
        base = a.access_ms + b.access_ms + self._distance(a, b) * self.model.core_ms * 2
        times = [now_ms + max(1, int(base + self.rng.random() * self.model.jitter_ms))]
        if self.model.duplicate and self.rng.random() < self.model.duplicate:
            self.duplicated += 1
            times.append(now_ms + max(1, int(base + self.rng.random() * self.model.jitter_ms * 4)))
        return times

    @staticmethod
    def _distance(a: _Host, b: _Host) -> float:
        dx = min(abs(a.x - b.x), 1 - abs(a.x - b.x))
        dy = min(abs(a.y - b.y), 1 - abs(a.y - b.y))
        return math.hypot(dx, dy) / math.sqrt(0.5)  # 0..1

    def _partitioned(self, a: _Host, b: _Host, now_ms: int) -> bool:
        for p in self.partitions:
            if p.start_ms <= now_ms < p.end_ms and a.side % p.sides != b.side % p.sides:
                return True
        return False
