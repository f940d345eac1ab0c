"""Following the device's address (issue 14): a phone on a new Wi-Fi or a new lease keeps its
number and its call.

A node that listens on every address (the default, 0.0.0.0) and was given no --advertise
looks, at each of the role keeper's checks, at its own address on the route toward the
overlay (a connect() on a spare socket: no packet). When it changed, the node goes back into
the overlay under the new one in the role it has (a peer leaves, handing its values over, and
joins again with its id; a client attaches again), its SIP front names the new address in
what it records from then on and stores its phones' registrations again, and the handset
offers each call's media at the new address (a re-INVITE through the front, which it talks
to on loopback: the path that does not move). A device with no route at all (between two
networks) waits for one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from ..core.wire.messages import Addr
from ..net.udp import OverlayError, UdpDriver, system_node_factory
from .config import route_source

log = logging.getLogger("peerphone.address")
ADDRESS_CHECK_S = 5.0  # the role keeper's period: a move costs at most this much audio
REJOIN_TIMEOUT_S = 30.0


class Address:
    """Where other nodes reach this one; `follows`: it is looked up again at every `check`."""

    def __init__(self, host: str, *, follows: bool = False, toward: Addr = ("192.0.2.1", 9)) -> None:
        self.host, self.follows, self.toward = host, follows, toward
        self.on_moved: list[Callable[[str], None]] = []  # the front, the handset: told once in the overlay

    async def check(self, driver: UdpDriver, bootstrap: list[Addr]) -> None:
        found = route_source(self.toward) if self.follows else None
        if found is None or found == self.host:
            return
        print(f"address {found}: was {self.host}", flush=True)
        node = driver.node
        make = system_node_factory(node.config, node.identity, found)
        try:  # the same role, the same id, the new address
            await driver.change_role(make, bootstrap, REJOIN_TIMEOUT_S)
        except OverlayError as e:
            log.warning("address %s: %s (tried again at the next check)", found, e)
            return
        self.host = found
        for tell in self.on_moved:
            tell(found)
        admitting = driver.node.admitting_peer
        where = f" through {admitting.addr[0]}:{admitting.addr[1]}" if admitting is not None else ""
        print(f"address {found}: in the overlay{where}", flush=True)

    async def run(self, driver: UdpDriver, bootstrap: list[Addr]) -> None:
        """For a node without a role keeper (a fixed role): the keeper's period, alone."""
        while True:
            await asyncio.sleep(ADDRESS_CHECK_S)
            await self.check(driver, bootstrap)
