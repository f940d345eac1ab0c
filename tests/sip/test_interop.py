"""SIP stacks nobody here wrote, through peerphone: SIPp as caller and as callee, baresip as callee."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from peerphone.app.procs import stop_process
from peerphone.app.tone import dominant_frequency, write_tone

from tests.procs import stop
from tests.sip.raw import exchange, free_port
from tests.sip.raw import register as raw_register
from tests.sip.world import DOMAIN, start_overlay, start_phone

pytestmark = pytest.mark.sip
pytest.importorskip("pjsua2", reason="pjsua2-python is installed by tools/setup --test on x86_64")


def register(front: str, user: str, contact_port: int) -> str:
    """A third-party REGISTER for a UA that does not register by itself (SIPp's uas); the status line."""
    host, port = front.rsplit(":", 1)
    return exchange((host, int(port)), lambda me: raw_register(me, user, contact_port))


def sipp(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(["sipp", *args, "-i", "127.0.0.1", "-nostdin", "-timeout_error", "-trace_err",
                             "-mp", str(free_port())], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)


def sipp_result(proc: subprocess.Popen[str], cwd: Path, timeout: float = 60) -> str:
    out, _ = proc.communicate(timeout=timeout)
    errors = "".join(p.read_text(errors="replace")[-1500:] for p in cwd.glob("*_errors.log"))
    return f"exit {proc.returncode}\n{out[-1500:]}\n{errors}"


@pytest.fixture(scope="module")
def overlay():
    peers = start_overlay(4)
    yield peers
    stop(peers)


@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (Debian sip-tester) is installed by tools/setup --test")
def test_sipp_calls_a_pjsua2_phone_registered_at_another_peer(overlay, tmp_path: Path):
    bob = start_phone("bob", overlay[3].sip)
    try:
        # SIPp's Request-URI is sip:bob@<the front's address>: the front reads it as the overlay AOR.
        proc = sipp("-sn", "uac", "-s", "bob", overlay[0].sip, "-p", str(free_port()), "-m", "3", "-l", "1",
                    "-d", "500", "-timeout", "40s", cwd=tmp_path)
        result = sipp_result(proc, tmp_path)
        assert proc.returncode == 0, result  # SIPp exits 0 only when every call succeeded
        for _ in range(3):
            bob.expect(r"^incoming call from .*sipp")
            bob.expect(r"^call ended \(200")  # SIPp's BYE reached Bob through both fronts
    finally:
        bob.stop()


@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (Debian sip-tester) is installed by tools/setup --test")
def test_a_pjsua2_phone_calls_sipp_registered_through_a_peer(overlay, tmp_path: Path):
    port = free_port()
    proc = sipp("-sn", "uas", "-p", str(port), "-m", "1", "-timeout", "40s", cwd=tmp_path)
    alice = None
    try:
        time.sleep(0.5)
        assert register(overlay[2].sip, "sipp", port) == "SIP/2.0 200 OK"
        alice = start_phone("alice", overlay[1].sip)
        alice.send(f"call sip:sipp@{DOMAIN} seconds=1")
        alice.expect(r"^call ended \(200", timeout=30)  # Alice's BYE, answered by SIPp
        assert alice.expect(r"^setup: INVITE to 180 Ringing [\d.]+ ms")
        result = sipp_result(proc, tmp_path)
        assert proc.returncode == 0, result
    finally:
        stop_process(proc)
        if alice is not None:
            alice.stop()


BARESIP_CONFIG = """\
poll_method epoll
sip_listen 127.0.0.1:{sip_port}
net_interface 127.0.0.1
audio_source aufile,{tone}
audio_player aubridge,nil
audio_alert aubridge,nil
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module aubridge.so
module_app account.so
module_app menu.so
"""


@pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is installed by tools/setup --test")
def test_baresip_registers_through_a_peer_and_a_pjsua2_phone_hears_its_tone(overlay, tmp_path: Path):
    tone = tmp_path / "tone.wav"
    write_tone(tone, 1000, 20)
    (tmp_path / "config").write_text(BARESIP_CONFIG.format(sip_port=free_port(), tone=tone))
    (tmp_path / "accounts").write_text(f'<sip:carol@{DOMAIN}>;outbound="sip:{overlay[2].sip}";regint=60;'
                                       "answermode=auto;audio_codecs=PCMU/8000/1\n")
    baresip = subprocess.Popen(["baresip", "-f", str(tmp_path), "-t", "40"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    alice = None
    try:
        deadline = time.monotonic() + 15
        registered = False
        while not registered and time.monotonic() < deadline:
            registered = register_seen(overlay[2], "carol")
            time.sleep(0.2)
        assert registered, "baresip did not register"
        alice = start_phone("alice", overlay[0].sip)
        recording = tmp_path / "from-baresip.wav"
        alice.send(f"call sip:carol@{DOMAIN} seconds=3 record={recording}")
        alice.expect(r"^call ended \(200", timeout=30)
        alice.expect(rf"^recorded {recording}")
        hz, level = dominant_frequency(recording)
        assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)
    finally:
        stop_process(baresip)
        if alice is not None:
            alice.stop()


def register_seen(peer, user: str) -> bool:
    """The peer's log says `user` registered (it logs every registration at info level)."""
    return any(f"sip:{user}@{DOMAIN} registered" in line for line in peer.line_proc.stderr)
