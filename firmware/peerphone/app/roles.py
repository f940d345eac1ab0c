"""The role policy (core/role.py) on a running phone or peer: the battery is read every
ROLE_CHECK_S, and when the policy wants the other role the node changes it on its socket
(UdpDriver.change_role: a peer hands its values over first), the SIP front's records follow
(through the new admitting peer, or reached directly again), and a line says why.

The handset and its calls are not touched: their media goes phone to phone, and the front
stays where it is; only the overlay path of the front's requests changes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from ..core.peer import PeerConfig
from ..core.role import Conditions, Role, RolePolicy
from ..core.wire.messages import Addr
from ..hw.power import PowerError, PowerReading, PowerSource
from ..net.sip_transport import SipTransport
from ..net.udp import OverlayError, UdpDriver, system_node_factory

log = logging.getLogger("peerphone.role")
ROLE_CHECK_S = 5.0  # a battery changes by a percent in minutes: a read every 5 s costs nothing
ROLE_CHANGE_TIMEOUT_S = 30.0


def conditions_of(reading: PowerReading) -> Conditions:
    return Conditions(reading.battery_percent, reading.external_power)


def config_for(config: PeerConfig, role: Role) -> PeerConfig:
    client = role is Role.CLIENT
    return replace(config, client=client, attach=client)


class RoleKeeper:
    def __init__(self, policy: RolePolicy, power: PowerSource, reading: PowerReading, driver: UdpDriver,
                 front: SipTransport | None, advertise_host: str, bootstrap: list[Addr]) -> None:
        """`reading`: the battery as the first role was decided on."""
        self.policy, self.power, self._reading = policy, power, reading
        self.driver, self.front = driver, front
        self.advertise_host, self.bootstrap = advertise_host, bootstrap
        self._power_error = ""

    def conditions(self) -> Conditions:
        """What the node knows now; an unreadable battery keeps its last reading (and says so once)."""
        try:
            self._reading, self._power_error = self.power.read(), ""
        except PowerError as e:
            if str(e) != self._power_error:
                log.warning("battery: %s", e)
                self._power_error = str(e)
        return conditions_of(self._reading)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(ROLE_CHECK_S)
            decision = self.policy.decide(self.conditions(), now_ms=self.driver.now_ms())
            current = Role.CLIENT if self.driver.node.config.client else Role.PEER
            if decision.role is not current:
                await self.change(decision.role, decision.reason)

    async def change(self, role: Role, reason: str) -> None:
        print(f"role {role.value}: {reason}", flush=True)
        node = self.driver.node
        make = system_node_factory(config_for(node.config, role), self.advertise_host, node_id=node.me.node_id)
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
