"""Interconnect with a public SIP domain (seed 002, §3.4): Kamailio on 127.0.0.1 as public.example."""

from __future__ import annotations

from pathlib import Path

import pytest
from peerphone.app.tone import dominant_frequency

from tests.procs import start_peer, stop
from tests.sip import kamailio
from tests.sip.raw import free_port
from tests.sip.world import DOMAIN, start_overlay, start_phone

pytestmark = [pytest.mark.sip, pytest.mark.skipif(not kamailio.available(), reason="kamailio is installed by "
                                                  "tools/setup --test")]
pytest.importorskip("pjsua2", reason="pjsua2-python is installed by tools/setup --test on x86_64")

PUBLIC = "public.example"


def test_calls_both_ways_between_the_overlay_and_a_kamailio_domain(tmp_path: Path):
    port = free_port()
    peers = start_overlay(3)
    # One peer gateways to the public domain; the others find it through the overlay.
    gateway = start_peer("--gateway", f"{PUBLIC}=127.0.0.1:{port}", bootstrap=peers[0].addr)
    peers.append(gateway)
    proxy = kamailio.start(tmp_path, port, PUBLIC, overlay=DOMAIN, gateway=gateway.sip)
    phones = []
    try:
        dave = start_phone("dave", f"127.0.0.1:{port}", domain=PUBLIC, record_dir=tmp_path / "dave")
        alice = start_phone("alice", peers[1].sip, record_dir=tmp_path / "alice")
        phones += [dave, alice]

        alice.send(f"call sip:dave@{PUBLIC} tone=1000 seconds=2")  # overlay -> gateway peer -> Kamailio -> Dave
        dave.expect(r"^incoming call from .*sip:alice@" + DOMAIN)
        alice.expect(r"^call ended \(200", timeout=30)
        hz, level = dominant_frequency(Path(dave.expect(r"^recorded (\S+)").group(1)))
        assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)

        dave.send(f"call sip:alice@{DOMAIN} tone=1000 seconds=2")  # Kamailio -> gateway peer -> overlay -> Alice
        alice.expect(r"^incoming call from .*sip:dave@" + PUBLIC)
        dave.expect(r"^call ended \(200", timeout=30)
        dave.expect(r"^setup: INVITE to 180 Ringing [\d.]+ ms")
        hz, level = dominant_frequency(Path(alice.expect(r"^recorded (\S+)").group(1)))
        assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)
    finally:
        for phone in phones:
            phone.stop()
        kamailio.stop(proxy)
        stop(peers)
