"""Session times for churn: exponential, or Weibull (heavier tails, as measured in
deployed P2P systems), both parametrised by their median."""

from __future__ import annotations

import math
import random

SESSION_MIN_MS = 1000


def session_ms(rng: random.Random, median_ms: float, kind: str = "exponential", shape: float = 0.7) -> int:
    if kind == "weibull":
        scale = median_ms / math.log(2) ** (1 / shape)  # the Weibull median is scale * ln2^(1/k)
        return max(SESSION_MIN_MS, int(rng.weibullvariate(scale, shape)))
    if kind == "exponential":
        return max(SESSION_MIN_MS, int(rng.expovariate(math.log(2) / median_ms)))
    raise ValueError(f"unknown session distribution {kind!r}")
