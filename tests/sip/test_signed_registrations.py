"""Issue 15's attacks on a stored registration, against real processes. Bob registers at a
front that holds his password, so his record is signed with his user key. A client and a
peer with identities of their own store over it and are refused (counted as
`refused.not_owner` by the peer holding it); his old record, captured and replayed after he
moved, loses to the removal his front stored (`refused.data_too_old`); a reader finds his
new contact only."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest
from peerphone.app.config import DEFAULT_OVERLAY, overlay_id, parse_hostport
from peerphone.app.wiring import open_client
from peerphone.core.ids import id_from_name
from peerphone.core.limits import Timing
from peerphone.core.peer import PeerConfig
from peerphone.core.usages import MODEL_OF, Kind, Registration
from peerphone.core.wire.messages import Entry, FetchAns
from peerphone.net.loop import run
from peerphone.net.udp import UdpDriver

from tests.net import node_factory
from tests.procs import stat_all, stop
from tests.sip.raw import register
from tests.sip.test_digest import digest_register
from tests.sip.world import DOMAIN, start_overlay

pytestmark = pytest.mark.sip

BOB = id_from_name(f"sip:bob@{DOMAIN}")
REG = Kind.SIP_REGISTRATION
PASSWORD = "bob's password"
DESK, MOBILE = 5071, 5072  # Bob's contact ports before and after he moves


def _bob_registers(front: tuple[str, int], contact_port: int, expires: int = 60) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
        port = s.getsockname()[1]
        s.sendto(register(port, "bob", contact_port, expires, domain=DOMAIN), front)
        challenge = s.recv(65536).decode()
        nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
        realm = re.search(r'realm="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
        s.sendto(digest_register(port, nonce, realm, PASSWORD, contact_port, expires), front)
        answer = s.recv(65536).decode()
        assert answer.startswith("SIP/2.0 200"), answer


def _contacts(answer: FetchAns) -> list[str]:
    return sorted(Registration.from_bytes(e.value).contact for e in answer.entries)


async def _fetch(driver: UdpDriver) -> FetchAns:
    done = await driver.request(lambda node, now: node.fetch(BOB, REG, now_ms=now))
    assert done.error is None and isinstance(done.answer, FetchAns), done.error
    return done.answer


async def _store_over_bob(driver: UdpDriver, entries: tuple[Entry, ...]) -> str:
    done = await driver.request(lambda node, now: node.store(BOB, REG, MODEL_OF[REG], entries, now_ms=now))
    assert done.error is not None, "stored over Bob's registration"
    return done.error.reason


def test_nobody_but_bob_s_fronts_writes_his_registration(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(f"bob {PASSWORD}\n")
    users.chmod(0o600)
    peers = start_overlay(3, "--users", str(users))
    try:
        host, port = peers[0].sip.rsplit(":", 1)
        front = (host, int(port))
        _bob_registers(front, DESK)
        via = [parse_hostport(p.addr, 0) for p in peers]

        async def attacks() -> tuple[Entry, dict[str, int]]:
            reader = await open_client(via[1], DEFAULT_OVERLAY)
            client = await open_client(via[2], DEFAULT_OVERLAY)
            peer = await UdpDriver.open(("127.0.0.1", 0), node_factory(PeerConfig(overlay_id(DEFAULT_OVERLAY),
                                                                                   Timing())))
            peer.join([via[0]])
            try:
                await reader.joined
                await client.joined
                await peer.joined
                desk = (await _fetch(reader)).entries
                assert _contacts(FetchAns(MODEL_OF[REG], desk)) == [f"sip:bob@127.0.0.1:{DESK}"]
                wall = time.time_ns() // 1_000_000
                forged = (Entry(desk[0].key, b"mallory's record", wall, 600),)  # over his contact
                assert "another key" in await _store_over_bob(client, forged)
                assert "another key" in await _store_over_bob(peer, (Entry(b"mallory", b"another", wall, 600),))
                assert _contacts(await _fetch(reader)) == [f"sip:bob@127.0.0.1:{DESK}"]
                return desk[0], dict(peer.node.counters)  # it may have joined where Bob's record is
            finally:
                for driver in (reader, client, peer):
                    driver.close()

        captured, totals = run(attacks())
        _bob_registers(front, MOBILE)  # Bob moves
        _bob_registers(front, DESK, expires=0)

        async def replay() -> list[str]:
            client = await open_client(via[2], DEFAULT_OVERLAY)
            try:
                await client.joined
                assert "newer" in await _store_over_bob(client, (captured,))  # his own signature, replayed
                return _contacts(await _fetch(client))
            finally:
                client.close()

        assert run(replay()) == [f"sip:bob@127.0.0.1:{MOBILE}"]
        for stat in stat_all([p.addr for p in peers]):
            for name, value in stat.counters:
                totals[name] = totals.get(name, 0) + value
        assert totals.get("refused.not_owner") == 2 and totals.get("refused.data_too_old") == 1, totals
    finally:
        stop(peers)
