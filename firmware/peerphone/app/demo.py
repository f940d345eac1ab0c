"""`peerphone demo`: a real call over a serverless overlay on this machine.

N peer processes form an overlay on 127.0.0.1, each with its SIP front. Bob's
phone (a process of its own: one pjsua2 Endpoint per process) registers at the
last peer, Alice's (this process) at the first. Alice calls sip:bob@DOMAIN by
AOR, plays a 1 kHz tone for a few seconds and hangs up; Bob answers and
records. The demo prints the call setup time and the frequency found in Bob's
recording, sends Bob a MESSAGE, and stops every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from ..core.overlay import Topology
from ..net.loop import run
from ..sip.ua import Handset, HandsetError, available
from .lab import LAB_OVERLAY, Lab, LabSpec
from .procs import child_env, peerphone_command, stop_process
from .tone import dominant_frequency, write_tone

TONE_HZ = 1000.0
TOLERANCE_HZ = 20.0
PHONE_TIMEOUT_S = 20.0


async def _line(proc: subprocess.Popen[bytes], prefix: str, timeout_s: float = PHONE_TIMEOUT_S) -> str:
    """The next line of `proc`'s stdout that starts with `prefix`."""
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> str:
        for raw in stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(prefix):
                return line
        raise RuntimeError(f"Bob's phone stopped before saying {prefix!r}")

    return await asyncio.wait_for(asyncio.to_thread(read), timeout_s)


async def _demo(args: argparse.Namespace, workdir: Path) -> int:
    domain = LAB_OVERLAY
    lab = Lab(LabSpec(args.peers, 0, 0.0, args.seed, 250, Topology(args.topology)), workdir)
    print(f"peerphone demo: {args.peers} peers ({args.topology}) on 127.0.0.1, domain {domain}, "
          f"a {TONE_HZ:.0f} Hz tone for {args.seconds:g} s")
    bob = None
    alice = None
    try:
        await lab.start()
        await lab.wait_stable("stabilizing")
        bob_at, alice_at = lab.peers[-1].sip, lab.peers[0].sip
        with open(workdir / "bob.log", "wb") as log:
            bob = subprocess.Popen(peerphone_command("phone", "--aor", f"sip:bob@{domain}", "--proxy",
                                                     f"{bob_at[0]}:{bob_at[1]}", "--record-dir", str(workdir / "bob")),
                                   stdout=subprocess.PIPE, stderr=log, stdin=subprocess.PIPE, env=child_env())
        await _line(bob, "registered ")
        print(f"Bob registered at the peer {bob_at[0]}:{bob_at[1]}")
        alice = Handset(f"sip:alice@{domain}", alice_at, say=lambda line: None)
        await alice.start()
        print(f"Alice registered at the peer {alice_at[0]}:{alice_at[1]}")
        tone = workdir / "tone.wav"
        write_tone(tone, TONE_HZ, args.seconds + 1)
        report = await alice.call(f"sip:bob@{domain}", play=tone, seconds=args.seconds)
        if report.status // 100 != 2:
            print(f"the call failed: {report.status} {report.reason}")
            return 1
        print(f"call setup: INVITE to 180 Ringing {report.ringing_ms:.1f} ms, to connected "
              f"{report.confirmed_ms:.1f} ms")
        recorded = Path((await _line(bob, "recorded ")).split(" ", 1)[1])
        hz, level = dominant_frequency(recorded)
        heard = abs(hz - TONE_HZ) <= TOLERANCE_HZ and level > 0.01
        print(f"Bob's recording: strongest frequency {hz:.1f} Hz (sent {TONE_HZ:.0f} Hz), RMS level {level:.3f}")
        status = await alice.message(f"sip:bob@{domain}", "hello from the demo")
        print(f"MESSAGE to Bob: {'delivered' if status // 100 == 2 else 'failed'} ({status})")
        ok = heard and status // 100 == 2
        print("result: " + ("the tone went through" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        if alice is not None:
            await alice.stop()
        if bob is not None:
            stop_process(bob, 10.0)
        lab.stop()


def run_demo(args: argparse.Namespace) -> int:
    why = available()
    if why is not None:
        print(f"peerphone demo: {why}", file=sys.stderr)
        return 1
    if not 2 <= args.peers <= 64:
        print("peerphone demo: --peers must be 2..64", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="peerphone-demo-") as tmp:
        try:
            return run(_demo(args, Path(tmp)))
        except (RuntimeError, HandsetError, TimeoutError) as e:
            print(f"peerphone demo: {e or 'timed out'}", file=sys.stderr)
            return 1
