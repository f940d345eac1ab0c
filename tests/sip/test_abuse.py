"""Fronts and peers as real processes, against abuse and bad luck (issue 11)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from peerphone.app.config import DEFAULT_OVERLAY, parse_hostport
from peerphone.app.wiring import open_client
from peerphone.core.ids import id_from_name
from peerphone.core.limits import REPLICAS, SIP_TCP_CONNECTIONS_MAX
from peerphone.core.usages import MODEL_OF, Kind, Registration
from peerphone.core.wire.messages import Entry
from peerphone.net.udp import OverlayError
from peerphone.sim.engine import Oracle
from peerphone.sip import front as front_module

from tests.procs import stop
from tests.sip.raw import exchange, free_port, register, request
from tests.sip.world import DOMAIN, start_overlay, start_phone

pytestmark = pytest.mark.sip


@pytest.fixture(scope="module")
def overlay():
    peers = start_overlay(3)
    yield peers
    stop(peers)


async def _squat(via: str, aor: str) -> str:
    """Store a registration for `aor` stamped 2**53 ms (year 285,000) with a week to live."""
    driver = await open_client(parse_hostport(via, 0), DEFAULT_OVERLAY)
    try:
        await driver.joined
        squatter = Registration(f"sip:thief@127.0.0.1:{free_port()}", ("127.0.0.1", 9), 1)
        entry = Entry(b"squat", squatter.to_bytes(), 2**53, 7 * 24 * 3600)
        await driver.store(id_from_name(aor), Kind.SIP_REGISTRATION, MODEL_OF[Kind.SIP_REGISTRATION], [entry])
    except OverlayError as e:
        return str(e)
    finally:
        driver.close()
    return "stored"


async def _newest_front(via: str, aor: str) -> str:
    """HOST:PORT of the front of `aor`'s newest registration: the one callers try first."""
    driver = await open_client(parse_hostport(via, 0), DEFAULT_OVERLAY)
    try:
        await driver.joined
        found = await driver.fetch(id_from_name(aor), Kind.SIP_REGISTRATION)
    finally:
        driver.close()
    newest = max(found.entries, key=lambda e: e.storage_time_ms)
    host, port = Registration.from_bytes(newest.value).front
    return f"{host}:{port}"


def test_a_far_future_registration_is_refused_and_bob_registers(overlay):
    aor = f"sip:bob@{DOMAIN}"
    assert "storage time ahead" in asyncio.run(_squat(overlay[0].addr, aor))
    host, port = overlay[1].sip.split(":")
    assert exchange((host, int(port)), lambda me: register(me, "bob", free_port())) == "SIP/2.0 200 OK"


def test_held_tcp_connections_and_a_register_flood_lock_no_phone_out(overlay):
    host, port = overlay[2].sip.split(":")
    front = (host, int(port))
    held = []
    try:
        for i in range(SIP_TCP_CONNECTIONS_MAX):  # every slot, from eight hosts, and never a word
            held.append(socket.create_connection(front, timeout=5, source_address=(f"127.0.0.{10 + i // 32}", 0)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
            flood.bind(("127.0.0.66", 0))
            me = flood.getsockname()[1]
            for i in range(2000):
                flood.sendto(register(me, f"flood{i}", me), front)
        tcp_phone = start_phone("tia", overlay[2].sip, "--sip-transport", "tcp")
        udp_phone = start_phone("uma", overlay[2].sip)
        tcp_phone.stop()
        udp_phone.stop()
    finally:
        for connection in held:
            connection.close()


def test_the_front_relays_nothing_for_a_stranger(overlay):
    host, port = overlay[1].sip.split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        victim.bind(("127.0.0.9", 0))
        victim.settimeout(1.0)
        stranger.bind(("127.0.0.77", 0))
        stranger.settimeout(5.0)
        me = stranger.getsockname()[1]
        target = f"sip:someone@127.0.0.9:{victim.getsockname()[1]}"
        stranger.sendto(request("INVITE", target, me).replace(b"127.0.0.1", b"127.0.0.77"), (host, int(port)))
        statuses = []
        while not statuses or statuses[-1] < 200:
            statuses.append(int(stranger.recv(65536).split(b" ")[1]))
        assert statuses[-1] == 403
        with pytest.raises(socket.timeout):
            victim.recv(65536)


def test_a_phone_at_two_fronts_outlives_one_and_a_call_through_the_dead_one_ends_on_both_sides():
    peers = start_overlay(4)
    phones = []
    try:
        alice = start_phone("alice9", peers[0].sip)
        phones.append(alice)
        bob = start_phone("bob9", peers[1].sip, "--proxy", peers[2].sip)
        phones.append(bob)
        fronts = {line.rsplit(" ", 1)[1] for line in bob.seen if line.startswith("registered ")}
        while fronts != {peers[1].sip, peers[2].sip}:  # each account says so once, in either order
            fronts.add(bob.expect(r"^registered sip:bob9@\S+ at (\S+)$").group(1))
        alice.send(f"call sip:bob9@{DOMAIN} tone=1000 seconds=8")
        bob.expect(r"^incoming call from .*sip:alice9@")
        bob.expect(r"^call established with .*sip:alice9@")  # the ACK came: the call is up on both sides
        carrying = asyncio.run(_newest_front(peers[3].addr, f"sip:bob9@{DOMAIN}"))
        next(p for p in peers[1:3] if p.sip == carrying).proc.kill()  # the front of this call dies mid-call
        assert alice.expect(r"^call ended \((\d+)", timeout=40).group(1) == "200"  # her BYE found another way
        bob.expect(r"^call ended", timeout=5)
        alice.send(f"call sip:bob9@{DOMAIN} tone=1000 seconds=1")  # and Bob is reachable still
        bob.expect(r"^incoming call from .*sip:alice9@", timeout=30)
        alice.expect(r"^call ended \(200", timeout=40)
    finally:
        for phone in phones:
            phone.stop()
        stop(peers)


def test_when_every_holder_of_bob_s_record_dies_at_once_his_front_stores_it_again():
    peers = start_overlay(7)
    phones = []
    try:
        aor = f"sip:bob8@{DOMAIN}"
        holders = set(Oracle(sorted(p.node_id for p in peers)).replica_set(id_from_name(aor), REPLICAS))
        spare = [p for p in peers if p.node_id not in holders]  # Bob's front and Alice's live on
        alice = start_phone("alice8", spare[0].sip)
        phones.append(alice)
        bob = start_phone("bob8", spare[1].sip)
        phones.append(bob)
        for peer in peers:
            if peer.node_id in holders:
                peer.proc.kill()  # all three at once: nobody is left to hand the record on
        deadline = time.monotonic() + front_module.AUDIT_CYCLE_MS / 1000 + 60
        while True:  # bounded: Bob is found again once his front has looked, or the test fails
            alice.send(f"call {aor} tone=1000 seconds=1")
            ended = alice.expect(r"^(call ended|call to \S+ failed)", timeout=40).group(0)
            if ended.startswith("call ended"):
                break
            assert time.monotonic() < deadline, alice.seen[-5:]
            time.sleep(0.1)  # a poll: each call attempt is itself the wait
        bob.expect(r"^incoming call from .*sip:alice8@")
    finally:
        for phone in phones:
            phone.stop()
        stop([p for p in peers if p.proc.poll() is None])
