"""A PulseAudio server for tests: sound devices on a machine with no sound card.

Each null sink is clocked like a card (pjmedia plays into it in real time) and its monitor
records what it played; alsa-lib reaches them through its pulse plugin, with an asound.conf
the test writes (REAL-PARTS.md, ALSA). The server runs as a child of the test, in a scratch
folder (its socket's path must be short), and is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from peerphone.app.procs import stop_process

START_S = 10.0


def available() -> bool:
    return shutil.which("pulseaudio") is not None and shutil.which("parec") is not None


class PulseServer:
    def __init__(self, sinks: tuple[str, ...], rate: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pp-sound-", dir="/tmp"))
        self.env = {"HOME": str(self.root), "XDG_RUNTIME_DIR": str(self.root / "run")}
        (self.root / "run").mkdir(mode=0o700)
        loads = [f"--load=module-null-sink sink_name={n} rate={rate} channels=1" for n in sinks]
        self.server = subprocess.Popen(["pulseaudio", "--daemonize=no", "-n", "--exit-idle-time=-1",
                                        "--load=module-native-protocol-unix", *loads],
                                       env={**os.environ, **self.env}, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        socket = self.root / "run" / "pulse" / "native"
        deadline = time.monotonic() + START_S
        while not socket.exists():  # bounded: the server is up, or the test fails
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError("PulseAudio did not start")
            time.sleep(0.05)
        self.children: list[subprocess.Popen[bytes]] = []

    def use_alsa_config(self, text: str) -> None:
        """alsa-lib's configuration for programs started with `env`: the system's, then `text`."""
        (self.root / "asound.conf").write_text(text)
        self.env["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{self.root / 'asound.conf'}"

    def start(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        """A PulseAudio client (parec, pactl...) that lives until `close`."""
        child = subprocess.Popen(cmd, env={**os.environ, **self.env})
        self.children.append(child)
        return child

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=10, check=True).stdout

    def close(self) -> None:
        for child in self.children:
            stop_process(child)
        stop_process(self.server)
        shutil.rmtree(self.root, ignore_errors=True)
