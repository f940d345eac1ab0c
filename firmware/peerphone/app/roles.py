"""The role policy (core/role.py) on a running phone or peer: every ROLE_CHECK_S the battery
is read and the node's link measured (core/role.py LinkQuality), and when the policy wants the
other role the node changes it on its socket (UdpDriver.change_role: a peer hands its values
over first), the SIP front's records follow (through the new admitting peer, or reached
directly again), and a line says why.

A client on external power keeps its attachment alive every LINK_WATCH_KEEPALIVE_S instead of
the battery client's 30 s: those keepalives are what measures the link it would be a peer on
(each role measures its own links from its start), and the default dwell time (60 s) lets
enough of them in (LinkQuality's 8) before the policy may take it back to peer; a node that
does not count its datagrams pays a few a minute for that.

The handset and its calls are not touched: their media goes phone to phone, and the front
stays where it is; only the overlay path of the front's requests changes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from ..core.limits import Timing
from ..core.peer import PeerConfig, PeerNode
from ..core.role import Conditions, Role, RolePolicy
from ..core.wire.messages import Addr
from ..hw.power import PowerError, PowerReading, PowerSource
from ..net.sip_transport import SipTransport
from ..net.udp import OverlayError, UdpDriver, system_node_factory
from .mobility import ADDRESS_CHECK_S, Address

log = logging.getLogger("peerphone.role")
ROLE_CHECK_S = ADDRESS_CHECK_S  # a battery changes by a percent in minutes: a read every 5 s costs nothing
ROLE_CHANGE_TIMEOUT_S = 30.0
# A peer on its battery maintains at this many times its period: half the maintenance datagrams
# and wake-ups, for neighbours' failures found half as fast (theirs of it are not slowed).
BATTERY_MAINTENANCE_STRETCH = 2
LINK_WATCH_KEEPALIVE_S = 2


def conditions_of(reading: PowerReading, node: PeerNode | None = None, *, now_ms: int = 0) -> Conditions:
    """The policy's inputs: the battery's reading, and what `node` measured of its network."""
    if node is None:
        return Conditions(reading.battery_percent, reading.external_power)
    rtt_ms, loss = node.link.measured(now_ms=now_ms)
    return Conditions(reading.battery_percent, reading.external_power, rtt_ms, loss, node.reachable)


def config_for(config: PeerConfig, role: Role, reading: PowerReading, *, policy: bool = True) -> PeerConfig:
    """A client on battery keeps alive every 30 s and leaves its reachability alone (the battery
    decides its role); on external power, under the policy, it watches both, to be a peer again
    when they allow. A client by choice (`policy` False, --client) only keeps alive."""
    client = role is Role.CLIENT
    watch = policy and reading.external_power
    keepalive_ms = LINK_WATCH_KEEPALIVE_S * 1000 if watch else Timing().client_keepalive_ms
    return replace(config, client=client, attach=client, reach_check=not client or watch,
                   timing=replace(config.timing, client_keepalive_ms=keepalive_ms))


class RoleKeeper:
    def __init__(self, policy: RolePolicy, power: PowerSource, reading: PowerReading, driver: UdpDriver,
                 front: SipTransport | None, address: Address, bootstrap: list[Addr]) -> None:
        """`reading`: the battery as the first role was decided on; `address`: where other
        nodes reach this one, followed at each check when it `follows` the device's."""
        self.policy, self.power, self._reading = policy, power, reading
        self.driver, self.front = driver, front
        self.address, self.bootstrap = address, bootstrap
        self._power_error = ""

    def conditions(self) -> Conditions:
        """What the node knows now; an unreadable battery keeps its last reading (and says so once)."""
        try:
            self._reading, self._power_error = self.power.read(), ""
        except PowerError as e:
            if str(e) != self._power_error:
                log.warning("battery: %s", e)
                self._power_error = str(e)
        return conditions_of(self._reading, self.driver.node, now_ms=self.driver.now_ms())

    async def run(self) -> None:
        while True:
            await asyncio.sleep(ROLE_CHECK_S)
            await self.address.check(self.driver, self.bootstrap)
            decision = self.policy.decide(self.conditions(), now_ms=self.driver.now_ms())
            current = Role.CLIENT if self.driver.node.config.client else Role.PEER
            if decision.role is not current:
                await self.change(decision.role, decision.reason)
            on_battery = not self._reading.external_power
            self.driver.node.stretch_maintenance(BATTERY_MAINTENANCE_STRETCH if on_battery else 1)

    async def change(self, role: Role, reason: str) -> None:
        print(f"role {role.value}: {reason}", flush=True)
        node = self.driver.node
        make = system_node_factory(config_for(node.config, role, self._reading), node.identity, self.address.host)
        try:
            await self.driver.change_role(make, self.bootstrap, ROLE_CHANGE_TIMEOUT_S)
        except OverlayError as e:
            log.warning("role %s: %s (tried again at the next check)", role.value, e)
            return
        admitting = self.driver.node.admitting_peer
        if self.front is not None:
            self.front.reached_through(admitting.node_id if admitting is not None else None)
        where = f" through {admitting.addr[0]}:{admitting.addr[1]}" if admitting is not None else ""
        print(f"role {role.value}: in the overlay{where}", flush=True)
