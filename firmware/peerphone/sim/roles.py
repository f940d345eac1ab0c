"""Battery handsets in the simulator: each with a battery model and the role policy of the real
phone (core/role.py), checked every ROLE_CHECK_MS; a change runs as the driver runs it
(UdpDriver.change_role): a peer leaves, handing its values over, and attaches as a client
with the same id; a client joins again as a peer.

The battery model is coarse and seeded: handsets in use, their charge drawn between
START_LOW and START_HIGH percent (most of them in or below the policy's gap, so most start as
clients), a peer's radio and CPU draining it faster than a client's, and a charger plugged
in, now and then, once the charge runs low (and unplugged once it is high). It is there to
drive the policy, not to predict a handset's hours.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial

from ..core.peer import State
from ..core.role import Conditions, Role, RolePolicy, RoleThresholds
from ..core.wire.messages import Addr
from .engine import Simulation

START_LOW, START_HIGH = 5.0, 60.0
LEAVE_WAIT_MS = 30_000  # as long as the phone's role keeper waits for a leave (app/roles.py)
LEAVE_POLL_MS = 500
ROLE_CHECK_MS = 60_000  # the real phone reads its battery every 5 s; a minute is enough for minutes of drain
DRAIN_PEER_PER_MIN = 3.0  # percent of the charge a minute, a day compressed into an hour: a peer keeps its radio up
DRAIN_CLIENT_PER_MIN = 0.3
CHARGE_PER_MIN = 2.0
PLUG_IN_BELOW, PLUG_IN_CHANCE = 30.0, 0.05  # each check: a user puts a low handset on its charger
UNPLUG_ABOVE, UNPLUG_CHANCE = 90.0, 0.3


@dataclass
class Battery:
    percent: float
    charging: bool

    def step(self, minutes: float, role: Role, rng: random.Random) -> None:
        if self.charging:
            self.percent = min(100.0, self.percent + CHARGE_PER_MIN * minutes)
            self.charging = not (self.percent >= UNPLUG_ABOVE and rng.random() < UNPLUG_CHANCE)
        else:
            drain = DRAIN_PEER_PER_MIN if role is Role.PEER else DRAIN_CLIENT_PER_MIN
            self.percent = max(0.0, self.percent - drain * minutes)
            self.charging = self.percent < PLUG_IN_BELOW and rng.random() < PLUG_IN_CHANCE

    def conditions(self) -> Conditions:
        return Conditions(battery_percent=int(self.percent), external_power=self.charging)


@dataclass
class Handset:
    addr: Addr
    battery: Battery
    policy: RolePolicy
    role: Role


class BatteryFleet:
    """The battery handsets among the simulated nodes, and the role changes they make."""

    def __init__(self, sim: Simulation, thresholds: RoleThresholds = RoleThresholds()) -> None:
        self.sim = sim
        self.thresholds = thresholds
        self.rng = random.Random(sim.rng.getrandbits(64))
        self.handsets: list[Handset] = []
        self.changes = {Role.PEER: 0, Role.CLIENT: 0}  # changes into each role, after the start
        self.unfinished_handovers = 0

    def build(self, nodes: int, handsets: int) -> None:
        """`nodes` nodes, `handsets` of them battery handsets. Each decides its first role before
        it joins, as the real phone does: the peers are built converged (Simulation.warm_start),
        the clients attach to random peers. Then each checks its role every ROLE_CHECK_MS, the
        handsets at random phases (they were switched on at different times)."""
        sim, now = self.sim, self.sim.now_ms
        first: list[tuple[Battery, RolePolicy, Role]] = []
        for _ in range(handsets):
            battery = Battery(self.rng.uniform(START_LOW, START_HIGH), charging=False)
            policy = RolePolicy(self.thresholds, now_ms=now)
            first.append((battery, policy, policy.decide(battery.conditions(), now_ms=now).role))
        clients = [f for f in first if f[2] is Role.CLIENT]
        sim.warm_start(nodes - len(clients))
        peers = iter(sorted(self.rng.sample(range(len(sim.live)), handsets - len(clients))))
        for battery, policy, role in first:
            if role is Role.PEER:
                addr = sim.live[next(peers)]
            else:
                addr = sim.add_client([sim.random_live().me.addr]).me.addr
            self.handsets.append(Handset(addr, battery, policy, role))
        for handset in self.handsets:
            sim.call_at(now + self.rng.randrange(ROLE_CHECK_MS), partial(self._check, handset))

    def _check(self, handset: Handset) -> None:
        now = self.sim.now_ms
        handset.battery.step(ROLE_CHECK_MS / 60_000, handset.role, self.rng)
        decision = handset.policy.decide(handset.battery.conditions(), now_ms=now)
        if decision.role is not handset.role:
            self._change(handset, decision.role)
        self.sim.call_at(now + ROLE_CHECK_MS, partial(self._check, handset))

    def _change(self, handset: Handset, role: Role) -> None:
        sim, node = self.sim, self.sim.nodes[handset.addr]
        known = [a for a in node.known_peers() if sim.is_live(a)][:4] or [sim.random_live().me.addr]
        handset.role = role
        self.changes[role] += 1
        if role is Role.PEER:
            sim.become(handset.addr, client=False, bootstrap=known)
            return
        sim.leave(handset.addr)  # hand every value over first, as the real phone does
        self._attach_after_leave(handset, known, sim.now_ms + LEAVE_WAIT_MS)

    def _attach_after_leave(self, handset: Handset, bootstrap: list[Addr], give_up_ms: int) -> None:
        """Attach once the node has left (every handover answered or timed out), or at `give_up_ms`."""
        sim = self.sim
        if sim.nodes[handset.addr].state is not State.LEFT:
            if sim.now_ms < give_up_ms:
                sim.call_at(sim.now_ms + LEAVE_POLL_MS, partial(self._attach_after_leave, handset, bootstrap,
                                                                 give_up_ms))
                return
            self.unfinished_handovers += 1  # it attaches anyway, as the driver does after its timeout
        sim.become(handset.addr, client=True, bootstrap=[a for a in bootstrap if sim.is_live(a)] or
                   [sim.random_live().me.addr])

    def clients(self) -> int:
        return sum(h.role is Role.CLIENT for h in self.handsets)
