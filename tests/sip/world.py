"""Peers and phones as real processes: a small overlay on 127.0.0.1 with SIP fronts."""

from __future__ import annotations

import subprocess
import sys
import time
import wave
from pathlib import Path

from peerphone.app.tone import dominant_frequency

from tests.procs import LineProc, PeerProc, start_peer, stop

DOMAIN = "peerphone.local"


def start_overlay(n: int, *extra: str) -> list[PeerProc]:
    peers = [start_peer(*extra)]
    try:
        peers += [start_peer(*extra, bootstrap=peers[0].addr) for _ in range(n - 1)]
    except BaseException:
        stop(peers)
        raise
    time.sleep(1.5)  # a few 100 ms maintenance rounds: successors and fingers settle
    return peers


def start_phone(user: str, proxy: str | None, *extra: str, record_dir: Path | None = None,
                domain: str = DOMAIN) -> LineProc:
    """A handset registered as sip:USER@DOMAIN at the SIP registrar `proxy` (None: at a peer of
    its own, which `extra` configures), commands on stdin."""
    cmd = [sys.executable, "-m", "peerphone", "phone", "--aor", f"sip:{user}@{domain}", *extra]
    if proxy is not None:
        cmd += ["--proxy", proxy]
    if record_dir is not None:
        cmd += ["--record-dir", str(record_dir)]
    phone = LineProc.start(cmd, stdin=subprocess.PIPE)
    try:
        phone.expect(rf"^registered sip:{user}@")
    except AssertionError:
        phone.stop()
        raise
    return phone


def last_seconds(recording: Path, seconds: float, out: Path) -> Path:
    """The end of a recording, as a WAV of its own: what was heard after a change mid-call."""
    with wave.open(str(recording), "rb") as whole:
        rate, frames = whole.getframerate(), whole.getnframes()
        whole.setpos(max(0, frames - int(rate * seconds)))
        tail = whole.readframes(frames)
        params = whole.getparams()
    with wave.open(str(out), "wb") as part:
        part.setparams(params)
        part.writeframes(tail)
    return out


def call_and_hear(caller: LineProc, callee: LineProc, callee_aor: str, caller_user: str) -> None:
    """`caller` calls `callee_aor` with a 1 kHz tone for 2 s; the callee (recording) hears it."""
    caller.send(f"call {callee_aor} tone=1000 seconds=2")
    callee.expect(rf"^incoming call from .*sip:{caller_user}@")
    hz, level = dominant_frequency(Path(callee.expect(r"^recorded (\S+)").group(1)))
    assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)
