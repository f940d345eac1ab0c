"""The phone on ARM (issue 13): peerphone with its native module cross-built (tools/cross; for
armhf also uvloop and msgpack, which PyPI has no armv7l wheels of), pjproject with ALSA
cross-built against Debian bookworm (tools/pjproject --arch), run under qemu-user with that
rootfs's own CPython, takes a real call from a phone on this machine through the overlay; the
tone is found on the ARM side. Once for aarch64 (Pi 3/4/5 and Zero 2 W on a 64-bit OS) and once
for armhf (32-bit Raspberry Pi OS)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.procs import LineProc, peerphone, stop
from tests.sip.world import DOMAIN, start_overlay

pytestmark = pytest.mark.sip
EMULATED_START_S = 180  # CPython, numpy and pjsua2 starting under qemu on a shared machine
# Debian's architecture name: (qemu-user's command, what platform.machine() says there)
ARCHES = {"aarch64": ("qemu-aarch64", "aarch64"), "armhf": ("qemu-arm", "armv7l")}


def builds(arch: str) -> tuple[str, str, str]:
    """The rootfs, pjsua2 and package directories tools/test made for `arch`."""
    names = [f"PEERPHONE_{arch.upper()}_{part}" for part in ("ROOTFS", "PJSUA2", "PACKAGE")]
    rootfs, pjsua2, package = (os.environ.get(name, "") for name in names)
    if not (rootfs and pjsua2 and package):
        if os.environ.get("CI"):
            raise RuntimeError(f"{', '.join(names)} are not set: tools/test builds them")
        pytest.skip(f"needs the {arch} builds: tools/test makes them (tools/cross, tools/pjproject --arch {arch})")
    return rootfs, pjsua2, package


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_the_arm_phone_takes_a_call_from_this_machine_and_hears_the_tone(arch: str, tmp_path: Path):
    rootfs, pjsua2, package = builds(arch)
    qemu, machine_name = ARCHES[arch]
    on_arm = {**os.environ, "PYTHONPATH": f"{package}:{pjsua2}", "PYTHONDONTWRITEBYTECODE": "1"}

    def emulated(*args: str) -> list[str]:
        return [qemu, "-L", rootfs, f"{rootfs}/usr/bin/python3", *args]

    peers = start_overlay(2)
    phone = None
    try:
        phone = LineProc.start(emulated("-m", "peerphone", "phone", "--aor", f"sip:pi@{DOMAIN}", "--proxy",
                                        peers[1].sip, "--record-dir", str(tmp_path)), stdin=subprocess.PIPE, env=on_arm)
        phone.expect(r"^registered sip:pi@", timeout=EMULATED_START_S)
        called = peerphone("call", f"sip:pi@{DOMAIN}", "--proxy", peers[0].sip, "--aor", f"sip:host@{DOMAIN}",
                           "--tone", "1000", "--seconds", "3")
        assert called.returncode == 0, called.stdout + called.stderr
        recorded = phone.expect(r"^recorded (\S+)", timeout=60).group(1)
        found = subprocess.run(emulated("-c", "import platform, sys, uvloop; from pathlib import Path; "
                                              "from peerphone.app.tone import dominant_frequency; "
                                              "print(platform.machine(), uvloop.__version__, "
                                              "*dominant_frequency(Path(sys.argv[1])))", recorded),
                               env=on_arm, capture_output=True, text=True, timeout=EMULATED_START_S)
        machine, uvloop_version, hz, level = found.stdout.split()
        assert machine == machine_name
        assert tuple(map(int, uvloop_version.split(".")[:2])) >= (0, 19)  # the project's pin, not Debian's 0.17
        assert abs(float(hz) - 1000) <= 20 and float(level) > 0.05, found.stdout
    finally:
        if phone is not None:
            phone.stop()
        stop(peers)
