"""The phone on aarch64 (issue 13): peerphone with its native module cross-built (tools/cross),
pjproject with ALSA cross-built against Debian bookworm for arm64 (tools/pjproject --arch),
run under qemu-user with that rootfs's own CPython, takes a real call from a phone on this
machine through the overlay; the tone is found on the aarch64 side."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.procs import LineProc, peerphone, stop
from tests.sip.world import DOMAIN, start_overlay

pytestmark = pytest.mark.sip
ROOTFS = os.environ.get("PEERPHONE_ARM_ROOTFS", "")  # tools/test sets these three
PJSUA2 = os.environ.get("PEERPHONE_ARM_PJSUA2", "")
PACKAGE = os.environ.get("PEERPHONE_ARM_PACKAGE", "")
EMULATED_START_S = 180  # CPython, numpy and pjsua2 starting under qemu on a shared machine

if not (ROOTFS and PJSUA2 and PACKAGE):
    if os.environ.get("CI"):
        raise RuntimeError("PEERPHONE_ARM_ROOTFS, _PJSUA2 and _PACKAGE are not set: tools/test builds them")
    pytest.skip("needs the aarch64 builds: tools/test makes them (tools/cross, tools/pjproject --arch aarch64)",
                allow_module_level=True)
ON_ARM = {"PYTHONPATH": f"{PACKAGE}:{PJSUA2}", "PYTHONDONTWRITEBYTECODE": "1"}


def aarch64(*args: str) -> list[str]:
    """A command run by the rootfs's aarch64 CPython under qemu-user."""
    return ["qemu-aarch64", "-L", ROOTFS, f"{ROOTFS}/usr/bin/python3", *args]


def test_the_aarch64_phone_takes_a_call_from_this_machine_and_hears_the_tone(tmp_path: Path):
    peers = start_overlay(2)
    phone = None
    try:
        phone = LineProc.start(aarch64("-m", "peerphone", "phone", "--aor", f"sip:pi@{DOMAIN}", "--proxy",
                                       peers[1].sip, "--record-dir", str(tmp_path)), stdin=subprocess.PIPE, env=ON_ARM)
        phone.expect(r"^registered sip:pi@", timeout=EMULATED_START_S)
        called = peerphone("call", f"sip:pi@{DOMAIN}", "--proxy", peers[0].sip, "--aor", f"sip:host@{DOMAIN}",
                           "--tone", "1000", "--seconds", "3")
        assert called.returncode == 0, called.stdout + called.stderr
        recorded = phone.expect(r"^recorded (\S+)", timeout=60).group(1)
        found = subprocess.run(aarch64("-c", "import platform, sys; from pathlib import Path; "
                                             "from peerphone.app.tone import dominant_frequency; "
                                             "print(platform.machine(), *dominant_frequency(Path(sys.argv[1])))",
                                       recorded), env={**os.environ, **ON_ARM}, capture_output=True, text=True,
                               timeout=EMULATED_START_S)
        machine, hz, level = found.stdout.split()
        assert machine == "aarch64"
        assert abs(float(hz) - 1000) <= 20 and float(level) > 0.05, found.stdout
    finally:
        if phone is not None:
            phone.stop()
        stop(peers)
