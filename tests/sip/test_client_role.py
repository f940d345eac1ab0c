"""A phone whose node is a client (issue 14): it stores and routes nothing, is reached through
its admitting peer, and when that peer dies attaches to another and is reached again."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from peerphone.app.roles import ROLE_CHECK_S
from peerphone.app.tone import dominant_frequency

from tests.procs import LineProc, peerphone, stop
from tests.sip.world import DOMAIN, last_seconds, start_overlay, start_phone

pytestmark = pytest.mark.sip
pytest.importorskip("pjsua2", reason="pjsua2-python is installed by tools/setup --test on x86_64")
REATTACH_S = 90  # the keepalive (45 s), its retransmissions, an ATTACH to an alternate: with room


def counters(addr: str) -> dict[str, str]:
    shown = peerphone("stat", "--via", addr)
    assert shown.returncode == 0, shown.stderr
    return dict(line.split()[:2] for line in shown.stdout.splitlines() if line.startswith("  ")) | {
        "role": re.search(r"^role\s+(\w+)", shown.stdout, re.M).group(1)}  # type: ignore[union-attr]


def eventually(check: Callable[[], bool], seconds: float = 2 * ROLE_CHECK_S + 2) -> bool:
    """Whether `check` holds within `seconds` (the role keeper acts at its next check)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


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


def battery(directory: Path, percent: int, status: str) -> None:
    """Write a battery as the kernel's power_supply class shows it."""
    directory.mkdir(exist_ok=True)
    (directory / "type").write_text("Battery\n")
    (directory / "status").write_text(status + "\n")
    (directory / "capacity").write_text(f"{percent}\n")


def test_a_phone_on_a_draining_battery_becomes_a_client_and_a_peer_again_on_its_charger(tmp_path: Path):
    peers = start_overlay(4)
    supply = tmp_path / "BAT0"
    battery(supply, 80, "Discharging")
    bob = alice = None
    try:
        bob = LineProc.start([sys.executable, "-m", "peerphone", "phone", "--aor", f"sip:bob2@{DOMAIN}",
                              "--bootstrap", peers[0].addr, "--listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0",
                              "--maintenance-ms", "100", "--battery", str(supply), "--role-dwell-s", "3",
                              "--record-dir", str(tmp_path)], stdin=subprocess.PIPE)
        assert "battery, link and reachability all good" in bob.expect(r"^role peer: ").string
        bob_node = bob.expect(r"^listening (\S+) id=").group(1)
        bob.expect(rf"^registered sip:bob2@{DOMAIN}")
        keys = [f"kept-{i}" for i in range(24)]
        for key in keys:
            assert peerphone("put", key, f"value of {key}", "--via", bob_node).returncode == 0
        held = int(re.search(r"^values\s+(\d+) stored", peerphone("stat", "--via", bob_node).stdout, re.M).group(1))
        assert held > 0, "bob, a peer, should hold some of the values"  # about 3 in 5 of them
        assert eventually(lambda: counters(bob_node)["maintenance_ms"] == "200")  # a peer on its battery: stretched

        alice = start_phone("alice2", peers[3].sip)
        alice.send(f"call sip:bob2@{DOMAIN} tone=1000 seconds=14")
        bob.expect(r"^incoming call from ", timeout=30)
        battery(supply, 15, "Discharging")
        assert "battery 15% and discharging" in bob.expect(r"^role client: ", timeout=30).string
        bob.expect(r"^role client: in the overlay through ", timeout=60)
        assert counters(bob_node)["role"] == "client"
        for key in keys:  # what bob held was handed over before he stopped answering for it
            got = peerphone("get", key, "--via", peers[1].addr)
            assert got.returncode == 0 and got.stdout.strip() == f"value of {key}", (key, got.stderr)
        assert alice.expect(r"^call ended \((\d+)", timeout=60).group(1) == "200"  # the call went on
        recording = Path(bob.expect(r"^recorded (\S+)").group(1))
        hz, level = dominant_frequency(last_seconds(recording, 3, tmp_path / "tail.wav"))
        assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)  # the tone to the end, after the change

        battery(supply, 90, "Charging")
        assert "all good" in bob.expect(r"^role peer: ", timeout=30).string
        bob.expect(r"^role peer: in the overlay", timeout=60)
        assert counters(bob_node)["role"] == "peer"
        assert eventually(lambda: counters(bob_node)["maintenance_ms"] == "100")  # on its charger: the full rate
        call_with_tone(alice, bob, "bob2")  # reached directly again

        flips_s, lines = 16.5, []
        for i in range(int(flips_s / 1.5)):  # a gauge that jumps across both thresholds every 1.5 s
            battery(supply, 10 if i % 2 == 0 else 95, "Discharging")
            lines += bob.collect(1.5)
        changes = [line for line in lines if line.startswith("role ") and "in the overlay" not in line]
        # It follows the gauge, but at most once per dwell (3 s) and per check (ROLE_CHECK_S, 5 s)
        assert 1 <= len(changes) <= flips_s / max(3, ROLE_CHECK_S) + 1, changes
    finally:
        for phone in (alice, bob):
            if phone is not None:
                phone.stop()
        stop(peers)
