"""Wiring a node to the operating system: a peer with its SIP front, or a client attached to one."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from ..core.ids import short
from ..core.limits import Timing
from ..core.overlay import Topology
from ..core.peer import PeerConfig
from ..core.role import Role, RolePolicy, RoleThresholds
from ..core.wire.messages import Addr
from ..hw.board import Board
from ..hw.power import BatterySpec, PowerError, PowerReading, PowerSource, power_source
from ..net.sip_transport import SipTransport
from ..net.supervisor import Supervisor
from ..net.udp import OverlayError, UdpDriver, system_node_factory
from ..sip.auth import Credentials
from ..sip.front import FrontConfig
from .config import (
    DEFAULT_PORT,
    WILDCARDS,
    ConfigError,
    load_users,
    overlay_id,
    parse_gateway,
    parse_hostport,
    route_source_address,
    sip_tls_port,
)
from .identity import name_tickets, node_identity, overlay_trust
from .mobility import Address
from .roles import RoleKeeper, conditions_of, config_for

log = logging.getLogger("peerphone")
JOIN_TIMEOUT_S = 15.0


async def start_peer(args: argparse.Namespace, supervisor: Supervisor, board: Board | None = None,
                     users: Credentials | None = None) -> tuple[UdpDriver, SipTransport | None, Address]:
    """Join the overlay as a peer, or as a client (--client, or a battery that says so), and
    open its SIP front; print where both listen. With a battery (--battery, or the board's),
    the role follows it from then on (app/roles.py); listening on every address with no
    --advertise, so does the address other nodes reach it at (app/mobility.py)."""
    listen = parse_hostport(args.listen)
    bootstrap = [parse_hostport(b, DEFAULT_PORT) for b in args.bootstrap]
    toward = bootstrap[0] if bootstrap else ("192.0.2.1", 9)
    follows = not args.advertise and listen[0] in WILDCARDS
    address = Address(args.advertise or (route_source_address(toward) if follows else listen[0]),
                      follows=follows, toward=toward)
    advertise_host = address.host
    now_ms = int(asyncio.get_running_loop().time() * 1000)  # the driver's clock
    role = getattr(args, "role", "auto")
    client = role == "client"
    policy, power, reading = _role_policy(args, board, now_ms)
    keep_role = role == "auto" and bool(bootstrap)  # the first peer of an overlay has nobody to attach to
    state_dir = getattr(args, "state_dir", None)
    config = PeerConfig(overlay_id(args.overlay), Timing().scaled(args.maintenance_ms),
                        topology=Topology(args.topology), trust=overlay_trust(state_dir))
    if reading.battery_percent is not None and not bootstrap:
        raise ConfigError("--battery needs --bootstrap: a node on a low battery attaches to a peer as a client")
    if getattr(args, "battery", None) and role != "auto":
        raise ConfigError(f"--battery needs --role auto: a node that is always a {role} follows no battery")
    if keep_role:
        decision = policy.decide(conditions_of(reading), now_ms=now_ms)
        client = decision.role is Role.CLIENT
        print(f"role {decision.role.value}: {decision.reason}", flush=True)
    if client and not bootstrap:
        raise ConfigError("--client needs --bootstrap: a client attaches to a peer of an overlay")
    config = config_for(config, Role.CLIENT if client else Role.PEER, reading, policy=keep_role)
    identity = node_identity(state_dir, config.trust)
    try:
        driver = await UdpDriver.open(listen, system_node_factory(config, identity, advertise_host))
    except OSError as e:
        raise ConfigError(f"cannot listen on {args.listen}: {e.strerror or e}") from None
    supervisor.on_shutdown("close the socket", driver.close)
    driver.join(bootstrap)
    try:
        await asyncio.wait_for(driver.joined, JOIN_TIMEOUT_S)
    except asyncio.TimeoutError:
        driver.close()
        raise OverlayError(f"join failed: no answer from {', '.join(args.bootstrap)}") from None
    except OverlayError:
        driver.close()
        raise
    me = driver.node.me
    admitting = driver.node.admitting_peer
    print(f"listening {me.addr[0]}:{me.addr[1]} id={me.node_id:040x}"
          + (f" client of {admitting.node_id:040x} at {admitting.addr[0]}:{admitting.addr[1]}" if admitting else ""),
          flush=True)
    log.info("peer %s on %s:%d, overlay %r", short(me.node_id), me.addr[0], me.addr[1], args.overlay)
    supervisor.on_shutdown("leave the overlay", lambda: driver.leave(config.timing.leave_timeout_ms / 1000))
    front = None
    if args.sip_listen != "off":
        sip_listen = parse_hostport(args.sip_listen)
        gateways = dict(parse_gateway(g) for g in args.gateway)
        domain = args.domain or args.overlay
        if users is None and getattr(args, "users", None):
            users = load_users(args.users, domain)
        front_config = FrontConfig(domain, me.node_id, advertise_host, sip_listen[1],
                                   gateways=gateways, reachable=not args.sip_tunnel,
                                   admitting=admitting.node_id if admitting else None, users=users,
                                   tickets=name_tickets(state_dir, identity, config.trust))
        sip_tls = getattr(args, "sip_tls", "auto")
        try:
            front = await SipTransport.open(*sip_listen, front_config, driver, supervisor.spawn,
                                            tls_port=sip_tls_port(sip_tls, sip_listen[1]))
        except OSError as e:
            raise ConfigError(f"cannot listen for SIP on {args.sip_listen} (TLS: {sip_tls}): {e.strerror or e}") \
                from None
        supervisor.on_shutdown("close the SIP front", front.close)
        driver.node.counters_beside = front.front.counters
        tls = f" tls={front.tls_port}" if front.tls_port else ""
        print(f"sip {advertise_host}:{front.port} domain={front.front.config.domain}{tls}", flush=True)
        address.on_moved.append(front.moved)
    if client or keep_role:
        _say_when_attached(driver)
    if keep_role:
        supervisor.spawn(RoleKeeper(policy, power, reading, driver, front, address, bootstrap).run())
    elif follows and bootstrap:  # the first peer of an overlay has nobody to go back to
        supervisor.spawn(address.run(driver, bootstrap))
    return driver, front, address


def _role_policy(args: argparse.Namespace, board: Board | None,
                 now_ms: int) -> tuple[RolePolicy, PowerSource, PowerReading]:
    """The policy (the board's [role], --role-dwell-s), the power it follows (--battery, else
    the board's [battery], else mains) and its first reading (a battery that cannot be read is
    a mistake of the settings)."""
    supply = getattr(args, "battery", None)
    spec = BatterySpec(source="sysfs", supply=supply) if supply else board.battery if board else BatterySpec()
    thresholds = board.role if board else RoleThresholds()
    dwell_s = getattr(args, "role_dwell_s", None)
    if dwell_s is not None:
        thresholds = replace(thresholds, min_dwell_ms=dwell_s * 1000)
    try:
        power = power_source(spec)
        reading = power.read()
    except PowerError as e:
        raise ConfigError(f"battery: {e}") from None
    return RolePolicy(thresholds, now_ms=now_ms), power, reading


def _say_when_attached(driver: UdpDriver) -> None:
    """A client's new admitting peer, on stdout (after whatever else listens for it)."""
    before = driver.on_attached

    def attached(peer_id: int) -> None:
        if before is not None:
            before(peer_id)
        peer = driver.node.admitting_peer
        where = f" at {peer.addr[0]}:{peer.addr[1]}" if peer is not None else ""
        print(f"attached to {peer_id:040x}{where}", flush=True)

    driver.on_attached = attached


async def open_client(via: Addr, overlay: str, topology: Topology = Topology.CHORD,
                      state_dir: Path | None = None) -> UdpDriver:
    """A client node (it stores and routes nothing) attached to the peer at `via`; with
    `state_dir`, with the identity there (an enrolled overlay admits no other)."""
    config = PeerConfig(overlay_id(overlay), client=True, topology=topology, trust=overlay_trust(state_dir))
    driver = await UdpDriver.open(("0.0.0.0", 0), system_node_factory(config, node_identity(state_dir, config.trust)))
    driver.join([via])
    return driver
