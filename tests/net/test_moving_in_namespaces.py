"""A phone whose address changes (issue 14, mobility), its host a network namespace that gets a
new lease: the node goes back into the overlay under its new address in the role it had, its
front stores its registration again, a call that was up goes on (the handset's re-INVITE puts
its media on the new address; the far front finds the moved front again by its AOR), and new
calls reach it at the new address."""

from __future__ import annotations

import re
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.netns import Hosts, Overlay, hosts, overlay_beside
from tests.procs import LineProc
from tests.sip.world import DOMAIN

pytestmark = pytest.mark.netns
MAINTENANCE_MS = "200"
CALL_S = 20  # the call that is up while the address changes


def mobile_phone(lab: Hosts, net: Overlay, role: str, record_dir: Path) -> LineProc:
    """Bob's phone on every address of its host (the default), no --advertise: it follows its address."""
    bob = lab.run(net.subject, "phone", "--aor", f"sip:bob@{DOMAIN}", "--bootstrap", net.bootstrap, "--role", role,
                  "--listen", "0.0.0.0:0", "--sip-listen", "0.0.0.0:0", "--maintenance-ms", MAINTENANCE_MS,
                  "--record-dir", str(record_dir), stdin=subprocess.PIPE)
    bob.expect(rf"^registered sip:bob@{DOMAIN}")
    return bob


def alice_phone(lab: Hosts, net: Overlay) -> LineProc:
    alice = lab.run(net.rest, "phone", "--aor", f"sip:alice@{DOMAIN}", "--proxy", net.front, stdin=subprocess.PIPE)
    alice.expect(rf"^registered sip:alice@{DOMAIN}")
    return alice


def call_with_tone(alice: LineProc, bob: LineProc, seconds: int) -> list[bool]:
    """Alice calls Bob with a 1 kHz tone: for each second of Bob's recording, was it heard?"""
    alice.send(f"call sip:bob@{DOMAIN} tone=1000 seconds={seconds}")
    bob.expect(r"^incoming call from ", timeout=30)
    assert alice.expect(r"^call ended \((\d+)", timeout=60).group(1) == "200"
    return seconds_with_tone(Path(bob.expect(r"^recorded (\S+)").group(1)))


def seconds_with_tone(recording: Path, hz: float = 1000) -> list[bool]:
    """For each whole second of a recording: was the tone in it?"""
    with wave.open(str(recording), "rb") as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    found = []
    for start in range(0, samples.size - rate + 1, rate):
        second = samples[start:start + rate]
        spectrum = np.abs(np.fft.rfft(second))
        spectrum[0] = 0.0
        level = np.sqrt(np.mean(second ** 2)) / 32768
        found.append(abs(int(np.argmax(spectrum)) - hz) <= 20 and level > 0.05)  # 1 Hz bins
    return found


def test_a_peer_phone_that_gets_a_new_address_mid_call_keeps_the_call_and_is_called_there(tmp_path: Path):
    pytest.importorskip("pjsua2", reason="pjsua2-python is installed by tools/setup --test on x86_64")
    with hosts() as lab:
        net = overlay_beside(lab, MAINTENANCE_MS, DOMAIN)
        bob = mobile_phone(lab, net, "peer", tmp_path)
        port = bob.saw(r"^listening ").split()[1].rsplit(":", 1)[1]
        assert bob.saw(r"^listening ").split()[1] == f"{net.subject_ip}:{port}"
        alice = alice_phone(lab, net)
        alice.send(f"call sip:bob@{DOMAIN} tone=1000 seconds={CALL_S}")
        bob.expect(r"^incoming call from ", timeout=30)
        bob.collect(2)
        new_ip = lab.readdress(net.subject_ip, 22)
        assert f"was {net.subject_ip}" in bob.expect(rf"^address {re.escape(new_ip)}: ", timeout=20).string
        bob.expect(rf"^call \d+: media offered at {re.escape(new_ip)}$", timeout=40)  # not only the far end's latching
        bob.expect(rf"^address {re.escape(new_ip)}: in the overlay")
        assert not any(line.startswith("call ended") for line in alice.lines.queue), "the move came after the call"
        shown = lab.peerphone(net.rest, "stat", "--via", f"{new_ip}:{port}").stdout
        assert re.search(r"^role\s+peer", shown, re.M), shown  # the peer answers at its new address
        assert alice.expect(r"^call ended \((\d+)", timeout=60).group(1) == "200"  # the call went on
        heard = seconds_with_tone(Path(bob.expect(r"^recorded (\S+)").group(1)))[:CALL_S - 1]
        # The tone to the call's end, the move somewhere inside it: a second or two lost at most.
        assert len(heard) == CALL_S - 1 and heard[-3:] == [True] * 3 and heard.count(False) <= 2, heard
        assert call_with_tone(alice, bob, 2)[:2] == [True, True]  # a new call finds him at his new address


def test_a_client_phone_that_gets_a_new_address_attaches_again_and_is_called_there(tmp_path: Path):
    pytest.importorskip("pjsua2", reason="pjsua2-python is installed by tools/setup --test on x86_64")
    with hosts() as lab:
        net = overlay_beside(lab, MAINTENANCE_MS, DOMAIN)
        bob = mobile_phone(lab, net, "client", tmp_path)
        new_ip = lab.readdress(net.subject_ip, 23)
        bob.expect(rf"^address {re.escape(new_ip)}: in the overlay through ", timeout=40)
        assert call_with_tone(alice_phone(lab, net), bob, 2)[:2] == [True, True]
