"""Peer or client: the role a node wants, from its battery, its link and whether others can
reach it (seed 001; RFC 6940 §3.2 and §11: a client attaches to an admitting peer and stores
and routes nothing for others). Pure: the driver passes the readings and `now_ms` in.

Rules, each a pair of thresholds with a gap between them, so that a reading that hovers
around one threshold cannot make the role flap:

- battery: a node on its battery (discharging) below `battery_client_below` percent wants to
  be a client; it is fit to be a peer again on external power (charging, full, or no battery
  at all) or above `battery_peer_above` percent.
- link: loss above `loss_client_above` or a round trip above `rtt_client_above_ms` to its
  neighbours makes it want to be a client; both below `loss_peer_below` and
  `rtt_peer_below_ms` (or not measured yet) make it fit to be a peer.
- reachability: a node others tried and failed to reach unsolicited wants to be a client;
  one not tested yet, or reached, is fit to be a peer.
- a rule that made the node a client is cleared only by a good reading: while a client for its
  link or its reachability, "not measured yet" keeps it a client.

The table: a peer with any reason to be a client becomes a client; a client becomes a peer
only when every rule finds it fit; anything in a gap keeps the role it has. A change
happens only after `min_dwell_ms` in the current role (counted from the start for the first
role), so a link that heals and breaks every few seconds changes the role at most once per
dwell time. The first role is decided at once: a Pi on mains power starts as a peer, a node
with any reading in a gap starts as a client (the cautious side: joining later is cheap,
leaving hands every stored value over).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .ingress import BoundedLru


class Role(enum.Enum):
    PEER = "peer"
    CLIENT = "client"


@dataclass(frozen=True)
class RoleThresholds:
    """Defaults for a Pi on a battery HAT (a UPS HAT of one or two 18650 cells): a peer until a
    quarter of the charge is left; a peer again from half, or on mains. A Pi's peer sends a
    few datagrams a second of maintenance and answers for its range: a client costs a
    battery handset about two a minute."""

    battery_client_below: int = 25  # percent
    battery_peer_above: int = 50
    # Requests to a neighbour lost twice over, and hops never acknowledged (node.py: about 15% and
    # 9% of datagrams dropped each way on our link):
    loss_client_above: float = 0.10
    loss_peer_below: float = 0.03
    rtt_client_above_ms: int = 800
    rtt_peer_below_ms: int = 300
    min_dwell_ms: int = 60_000

    def problems(self) -> list[str]:
        """What makes these thresholds unusable: a gap that is empty or inverted flaps."""
        found = []
        if not 0 <= self.battery_client_below < self.battery_peer_above <= 100:
            found.append(f"battery: client below {self.battery_client_below}% must be under peer above "
                         f"{self.battery_peer_above}% (0 to 100)")
        if not 0 <= self.loss_peer_below < self.loss_client_above <= 1:
            found.append(f"loss: peer below {self.loss_peer_below:.0%} must be under client above "
                         f"{self.loss_client_above:.0%}")
        if not 0 < self.rtt_peer_below_ms < self.rtt_client_above_ms:
            found.append(f"round trip: peer below {self.rtt_peer_below_ms} ms must be under client above "
                         f"{self.rtt_client_above_ms} ms")
        if self.min_dwell_ms < 0:
            found.append("the dwell time cannot be negative")
        return found


@dataclass(frozen=True)
class Conditions:
    """What the node knows of itself when it decides; None: not known (yet)."""

    battery_percent: int | None = None  # None: no battery (mains)
    external_power: bool = True  # charging, full, or mains
    rtt_ms: float | None = None  # smoothed round trip to its neighbours
    loss: float | None = None  # share of requests and hops to neighbours lost (LinkQuality)
    reachable: bool | None = None  # another peer's unsolicited attempt to reach it got through


@dataclass(frozen=True)
class RoleDecision:
    role: Role
    reason: str  # why this role, for `peerphone stat` and the log
    changed: bool  # the role differs from the one before this decision


class RolePolicy:
    def __init__(self, thresholds: RoleThresholds, *, now_ms: int) -> None:
        problems = thresholds.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.thresholds = thresholds
        self.role: Role | None = None
        self.since_ms = now_ms  # the first role's dwell counts from the start
        self.changes = 0
        self._to_clear: frozenset[str] = frozenset()  # the rules that made it a client: they must be seen good

    def decide(self, conditions: Conditions, *, now_ms: int) -> RoleDecision:
        to_client = self.reasons_to_be_client(conditions)
        unfit = self.reasons_not_to_be_peer(conditions)
        if self.role is None:
            wanted = Role.CLIENT if to_client or unfit else Role.PEER
        elif self.role is Role.PEER:
            wanted = Role.CLIENT if to_client else Role.PEER
        else:
            wanted = Role.CLIENT if unfit else Role.PEER
        reason = "; ".join(to_client or unfit) or "external power or battery, link and reachability all good"
        if self.role is not None and wanted is not self.role and now_ms - self.since_ms < self.thresholds.min_dwell_ms:
            wait_s = (self.thresholds.min_dwell_ms - (now_ms - self.since_ms)) / 1000
            return RoleDecision(self.role, f"{reason} (stays {self.role.value} {wait_s:.0f} s more: dwell time)",
                                False)
        changed = self.role is not None and wanted is not self.role
        if wanted is not self.role:
            self.role, self.since_ms = wanted, now_ms
            self.changes += changed
            self._to_clear = self._failed_rules(conditions) if wanted is Role.CLIENT else frozenset()
        return RoleDecision(wanted, reason, changed)

    def _failed_rules(self, c: Conditions) -> frozenset[str]:
        t = self.thresholds
        poor_link = (c.loss is not None and c.loss > t.loss_client_above) or \
            (c.rtt_ms is not None and c.rtt_ms > t.rtt_client_above_ms)
        return frozenset({"link"} if poor_link else set()) | frozenset({"reach"} if c.reachable is False else set())

    def reasons_to_be_client(self, c: Conditions) -> list[str]:
        t = self.thresholds
        reasons = []
        if c.battery_percent is not None and not c.external_power and c.battery_percent < t.battery_client_below:
            reasons.append(f"battery {c.battery_percent}% and discharging (client below {t.battery_client_below}%)")
        if c.loss is not None and c.loss > t.loss_client_above:
            reasons.append(f"loss {c.loss:.0%} to neighbours (client above {t.loss_client_above:.0%})")
        if c.rtt_ms is not None and c.rtt_ms > t.rtt_client_above_ms:
            reasons.append(f"round trip {c.rtt_ms:.0f} ms (client above {t.rtt_client_above_ms} ms)")
        if c.reachable is False:
            reasons.append("other peers cannot reach this address")
        return reasons

    def reasons_not_to_be_peer(self, c: Conditions) -> list[str]:
        """What keeps a client a client: the rules' other thresholds."""
        t = self.thresholds
        reasons = []
        if c.battery_percent is not None and not c.external_power and c.battery_percent <= t.battery_peer_above:
            reasons.append(f"battery {c.battery_percent}% and discharging (peer above {t.battery_peer_above}%)")
        if c.loss is not None and c.loss >= t.loss_peer_below:
            reasons.append(f"loss {c.loss:.0%} to neighbours (peer below {t.loss_peer_below:.0%})")
        if c.rtt_ms is not None and c.rtt_ms >= t.rtt_peer_below_ms:
            reasons.append(f"round trip {c.rtt_ms:.0f} ms (peer below {t.rtt_peer_below_ms} ms)")
        if c.reachable is False:
            reasons.append("other peers cannot reach this address")
        # What made it a client is cleared by a good reading, not by none (a new client's link is
        # its admitting peer alone, measured after a few keepalives; its reach test, after one).
        if "link" in self._to_clear and (c.loss is None or c.rtt_ms is None):
            reasons.append("link not measured since it was poor")
        if "reach" in self._to_clear and c.reachable is None:
            reasons.append("reachability not tested since it failed")
        return reasons


class LinkQuality:
    """Round trip and loss on this node's own link, from what it already exchanges with its
    neighbours (hop acknowledgements, answers to keepalives and probes): no traffic of its own.

    Each neighbour gets a moving average over about `window` outcomes; the link's figure is the
    lower median of the neighbours with at least `min_samples` outcomes, the last within
    `fresh_ms`. A lossy link of ours shows to every neighbour, a dead or overloaded neighbour
    only to itself: one silent neighbour among several must not make a healthy node a client
    (and a dead one is forgotten once the node declares it failed). Neighbours of a role the
    node left (a client talks to its peer alone) fall out once they are stale."""

    def __init__(self, window: int = 16, min_samples: int = 8, fresh_ms: int = 120_000,
                 neighbours_max: int = 64) -> None:
        self._weight = 1 / window
        self._min_samples = min_samples
        self._fresh_ms = fresh_ms
        self._links: BoundedLru[int, _Link] = BoundedLru(neighbours_max)

    def acknowledged(self, node_id: int, rtt_ms: int, *, now_ms: int) -> None:
        link = self._link(node_id, now_ms)
        link.rtt_ms = rtt_ms if link.rtt_ms is None else link.rtt_ms + self._weight * (rtt_ms - link.rtt_ms)
        self._outcome(link, 0.0)

    def lost(self, node_id: int, *, now_ms: int) -> None:
        self._outcome(self._link(node_id, now_ms), 1.0)

    def forget(self, node_id: int) -> None:
        self._links.pop(node_id)

    def measured(self, *, now_ms: int) -> tuple[float | None, float | None]:
        """(round trip in ms, share lost), each None while not known."""
        links = [link for link in self._links.values()
                 if link.samples >= self._min_samples and now_ms - link.heard_ms <= self._fresh_ms]
        return (_lower_median([link.rtt_ms for link in links if link.rtt_ms is not None]),
                _lower_median([link.loss for link in links]))

    def _link(self, node_id: int, now_ms: int) -> _Link:
        link = self._links.get(node_id) or _Link()
        link.heard_ms = now_ms
        self._links.put(node_id, link)
        return link

    def _outcome(self, link: _Link, lost: float) -> None:
        link.samples += 1
        weight = max(self._weight, 1 / link.samples)  # the first outcomes count fully, not against a zero start
        link.loss += weight * (lost - link.loss)


@dataclass
class _Link:
    samples: int = 0
    loss: float = 0.0
    rtt_ms: float | None = None
    heard_ms: int = 0


def _lower_median(values: list[float]) -> float | None:
    return sorted(values)[(len(values) - 1) // 2] if values else None
