"""A phone whose node is a client (issue 14): it stores and routes nothing, is reached through
its admitting peer, and when that peer dies attaches to another and is reached again."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from peerphone.app.tone import dominant_frequency

from tests.procs import LineProc, peerphone, stop
from tests.sip.world import DOMAIN, start_overlay, start_phone

pytestmark = pytest.mark.sip
pytest.importorskip("pjsua2", reason="pjsua2-python is installed by tools/setup --test on x86_64")
REATTACH_S = 60  # the keepalive (25 s), its retransmissions, an ATTACH to an alternate: with room


def counters(addr: str) -> dict[str, str]:
    shown = peerphone("stat", "--via", addr)
    assert shown.returncode == 0, shown.stderr
    return dict(line.split()[:2] for line in shown.stdout.splitlines() if line.startswith("  ")) | {
        "role": re.search(r"^role\s+(\w+)", shown.stdout, re.M).group(1)}  # type: ignore[union-attr]


def call_with_tone(caller: LineProc, callee: LineProc, user: str) -> None:
    caller.send(f"call sip:{user}@{DOMAIN} tone=1000 seconds=2")
    callee.expect(r"^incoming call from ", timeout=30)
    assert caller.expect(r"^call ended \((\d+)", timeout=30).group(1) == "200"
    hz, level = dominant_frequency(Path(callee.expect(r"^recorded (\S+)").group(1)))
    assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)


def test_a_client_phone_is_called_through_its_peer_and_through_another_once_that_peer_dies(tmp_path: Path):
    peers = start_overlay(4)
    bob = alice = None
    try:
        admitting = peers[1]
        bob = LineProc.start([sys.executable, "-m", "peerphone", "phone", "--aor", f"sip:bob@{DOMAIN}", "--client",
                              "--bootstrap", admitting.addr, "--listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0",
                              "--record-dir", str(tmp_path)], stdin=subprocess.PIPE)
        listening = bob.expect(r"^listening (\S+) id=[0-9a-f]+ client of ([0-9a-f]+) at (\S+)$")
        bob_node = listening.group(1)
        assert int(listening.group(2), 16) == admitting.node_id and listening.group(3) == admitting.addr
        bob.expect(rf"^registered sip:bob@{DOMAIN}")
        assert counters(bob_node)["role"] == "client"
        assert counters(admitting.addr)["clients"] == "1"
        alice = start_phone("alice", peers[3].sip)
        call_with_tone(alice, bob, "bob")
        assert int(counters(admitting.addr).get("sent.TUNNEL", 0)) >= 1  # bob's SIP went through his peer

        admitting.proc.kill()
        moved = bob.expect(r"^attached to ([0-9a-f]+) at (\S+)$", timeout=REATTACH_S)
        assert int(moved.group(1), 16) in {p.node_id for p in peers if p is not admitting}
        call_with_tone(alice, bob, "bob")  # bob's front stored his registration anew when he moved
    finally:
        for phone in (alice, bob):
            if phone is not None:
                phone.stop()
        stop(peers)
