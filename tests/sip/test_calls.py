"""Calls, messages and offline messages between pjsua2 phones through peer processes."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import pytest
from peerphone.app.tone import dominant_frequency

from tests.procs import peerphone, start_peer, stop
from tests.sip.raw import exchange, request
from tests.sip.world import DOMAIN, call_and_hear, start_overlay, start_phone

pytestmark = pytest.mark.sip
pytest.importorskip("pjsua2", reason="pjsua2-python is installed by tools/setup --test on x86_64")


@pytest.fixture(scope="module")
def overlay():
    peers = start_overlay(5)
    yield peers
    stop(peers)


def test_alice_calls_bob_by_aor_and_bob_hears_the_tone(overlay, tmp_path: Path):
    bob = start_phone("bob", overlay[3].sip, record_dir=tmp_path)
    alice = start_phone("alice", overlay[1].sip)
    try:
        alice.send(f"call sip:bob@{DOMAIN} tone=1000 seconds=3")
        bob.expect(r"^incoming call from .*sip:alice@")
        assert alice.expect(r"^call ended \((\d+)", timeout=30).group(1) == "200"  # Alice hung up: BYE answered
        setup = alice.expect(r"^setup: INVITE to 180 Ringing ([\d.]+) ms, to confirmed ([\d.]+) ms")
        assert float(setup.group(1)) <= float(setup.group(2))
        bob.expect(r"^call ended")                                        # and Bob's side ended by it
        recorded = Path(bob.expect(r"^recorded (\S+)").group(1))
        hz, level = dominant_frequency(recorded)
        assert abs(hz - 1000) <= 20, hz
        assert level > 0.05, level  # a tone, not silence with a stray peak
    finally:
        alice.stop()
        bob.stop()


def test_a_message_arrives_and_an_offline_one_after_registering(overlay):
    bob = start_phone("bob2", overlay[2].sip)
    alice = start_phone("alice2", overlay[0].sip)
    carol = None
    try:
        alice.send(f"message sip:bob2@{DOMAIN} hello bob")
        assert "delivered (200)" in alice.expect(r"^message to sip:bob2@").string
        bob.expect(r"^message from .*alice2@.*: hello bob$")
        alice.send(f"message sip:carol@{DOMAIN} see you at noon")
        assert "kept until it registers (202)" in alice.expect(r"^message to sip:carol@").string
        carol = start_phone("carol", overlay[4].sip)
        carol.saw(r"^message from .*alice2@.*: see you at noon$")  # it may come before "registered"
        alice.send(f"message sip:carol@{DOMAIN} now online")
        assert "delivered (200)" in alice.expect(r"^message to sip:carol@").string
        carol.expect(r"^message from .*: now online$")
        assert sum("see you at noon" in line for line in carol.seen) == 1  # delivered once, then removed
    finally:
        for phone in (alice, bob, carol):
            if phone is not None:
                phone.stop()


def test_calling_an_unregistered_aor_fails_with_404(overlay):
    alice = start_phone("alice3", overlay[0].sip)
    try:
        alice.send(f"call sip:nobody@{DOMAIN} seconds=1")
        assert " 404 " in alice.expect(r"^call to sip:nobody@.* failed").string
    finally:
        alice.stop()


def test_a_phone_at_a_peer_reached_only_through_the_overlay_gets_calls_and_messages(overlay, tmp_path: Path):
    """The Tunnel path: the callee's peer is not sent SIP directly; its SIP travels in Tunnel requests."""
    hidden = start_peer("--sip-tunnel", bootstrap=overlay[0].addr)
    bob = alice = None
    try:
        bob = start_phone("bob3", hidden.sip, record_dir=tmp_path)
        alice = start_phone("alice4", overlay[2].sip)
        alice.send(f"call sip:bob3@{DOMAIN} tone=1000 seconds=2")
        bob.expect(r"^incoming call from .*sip:alice4@")
        assert alice.expect(r"^call ended \((\d+)", timeout=30).group(1) == "200"  # the BYE went through too
        hz, level = dominant_frequency(Path(bob.expect(r"^recorded (\S+)").group(1)))
        assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)
        alice.send(f"message sip:bob3@{DOMAIN} through the overlay")
        assert "delivered (200)" in alice.expect(r"^message to sip:bob3@").string
        stat = peerphone("stat", "--via", hidden.addr)
        counters = dict(line.split() for line in stat.stdout.splitlines() if line.startswith("  "))
        assert int(counters.get("sent.TUNNEL", 0)) >= 3 and int(counters.get("sent.TUNNEL_ANS", 0)) >= 3, stat.stdout
    finally:
        for phone in (alice, bob):
            if phone is not None:
                phone.stop()
        stop([hidden])


def test_presence_through_the_overlay_goes_online_then_offline(overlay):
    bob = start_phone("bob4", overlay[4].sip)
    alice = start_phone("alice5", overlay[1].sip)
    try:
        alice.send(f"watch sip:bob4@{DOMAIN}")  # SUBSCRIBE routed by AOR, NOTIFYs back along the Record-Route
        alice.expect(rf"^presence sip:bob4@{DOMAIN}: online$")
        bob.stop()  # says offline before it goes
        alice.expect(rf"^presence sip:bob4@{DOMAIN}: offline$")
    finally:
        alice.stop()
        bob.stop()


def test_the_call_and_message_commands(overlay, tmp_path: Path):
    bob = start_phone("bob5", overlay[2].sip, record_dir=tmp_path)
    try:
        called = peerphone("call", f"sip:bob5@{DOMAIN}", "--proxy", overlay[0].sip, "--aor", f"sip:zoe@{DOMAIN}",
                           "--tone", "1000", "--seconds", "1", timeout=60)
        assert called.returncode == 0, called.stdout + called.stderr
        assert re.search(r"^setup: INVITE to 180 Ringing [\d.]+ ms", called.stdout, re.M), called.stdout
        bob.expect(r"^incoming call from .*sip:zoe@")
        sent = peerphone("message", f"sip:bob5@{DOMAIN}", "hi from the shell", "--proxy", overlay[1].sip,
                         "--aor", f"sip:zoe@{DOMAIN}", timeout=60)
        assert sent.returncode == 0 and "delivered (200)" in sent.stdout, sent.stdout + sent.stderr
        bob.expect(r"^message from .*zoe@.*: hi from the shell$")
        missing = peerphone("call", f"sip:nobody@{DOMAIN}", "--proxy", overlay[0].sip, "--seconds", "1", timeout=60)
        assert missing.returncode == 1 and "404" in missing.stderr and "Traceback" not in missing.stderr
        bad = peerphone("call", "bob", "--proxy", overlay[0].sip)
        assert bad.returncode == 2 and "not a sip: URI" in bad.stderr
    finally:
        bob.stop()


def test_a_phone_with_its_own_peer_joins_the_overlay_and_is_called(overlay, tmp_path: Path):
    frank = start_phone("frank", None, "--listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0",
                        "--bootstrap", overlay[0].addr, record_dir=tmp_path)
    alice = start_phone("alice6", overlay[3].sip)
    try:
        assert frank.saw(r"^listening 127\.0\.0\.1:\d+ id=")  # a peer of the overlay, in the phone's process
        call_and_hear(alice, frank, f"sip:frank@{DOMAIN}", "alice6")
    finally:
        alice.stop()
        frank.stop()


def test_a_phone_on_tcp_calls_a_phone_on_udp(overlay, tmp_path: Path):
    carl = start_phone("carl", overlay[1].sip, "--sip-transport", "tcp")
    dana = start_phone("dana", overlay[3].sip, record_dir=tmp_path)
    try:
        carl.send(f"call sip:dana@{DOMAIN} tone=1000 seconds=2")
        dana.expect(r"^incoming call from .*sip:carl@")
        assert carl.expect(r"^call ended \((\d+)", timeout=30).group(1) == "200"  # BYE over TCP, then UDP
        hz, level = dominant_frequency(Path(dana.expect(r"^recorded (\S+)").group(1)))
        assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)
        dana.send(f"message sip:carl@{DOMAIN} back over tcp")
        assert "delivered (200)" in dana.expect(r"^message to sip:carl@").string
        carl.expect(r"^message from .*dana@.*: back over tcp$")
    finally:
        carl.stop()
        dana.stop()


def test_a_deflated_receipt_is_shown_as_a_receipt_never_as_bytes(overlay):
    """linphone acknowledges each message with a deflated message/imdn+xml: the phone says what it is."""
    receipt = (b'<?xml version="1.0" encoding="UTF-8"?><imdn xmlns="urn:ietf:params:xml:ns:imdn">'
               b"<message-id>34jk324j</message-id><delivery-notification><status><delivered/></status>"
               b"</delivery-notification></imdn>")
    bob = start_phone("bob4", overlay[1].sip)
    try:
        host, port = overlay[2].sip.rsplit(":", 1)
        status = exchange((host, int(port)), lambda me: request(
            "MESSAGE", f"sip:bob4@{DOMAIN}", me, body=zlib.compress(receipt),
            extra="Content-Type: message/imdn+xml\r\nContent-Encoding: deflate\r\n"))
        assert status == "SIP/2.0 200 OK"
        assert bob.expect(r"^receipt from ").string.endswith(": delivery receipt: delivered (message 34jk324j)")
        assert not [line for line in bob.seen if line.startswith("message from")]
    finally:
        bob.stop()
