"""Kamailio as a public SIP domain on 127.0.0.1, started in the foreground and stopped by its PID."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from peerphone.app.procs import stop_process

from tests.sip.raw import exchange, request

CONFIG = Path(__file__).with_name("kamailio.cfg")


def available() -> bool:
    return shutil.which("kamailio") is not None or Path("/usr/sbin/kamailio").exists()


def start(workdir: Path, port: int, domain: str, overlay: str = "", gateway: str = "") -> subprocess.Popen[bytes]:
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(CONFIG.read_text().replace("@PORT@", str(port)).replace("@DOMAIN@", domain)
                   .replace("@OVERLAY@", overlay or "-").replace("@GATEWAY@", gateway))
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"kamailio refused its configuration:\n{check.stderr[-2000:]}")
    log = open(workdir / "kamailio.log", "wb")
    proc = subprocess.Popen([binary, "-DD", "-E", "-f", str(cfg), "-Y", str(workdir), "-w", str(workdir),
                             "-P", str(workdir / "kamailio.pid")], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # answered an OPTIONS: ready
        if _answers(port):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"kamailio did not start: {(workdir / 'kamailio.log').read_text()[-2000:]}")


def _answers(port: int) -> bool:
    probe = exchange(("127.0.0.1", port), lambda me: request("OPTIONS", f"sip:127.0.0.1:{port}", me), timeout=0.3)
    return probe.startswith("SIP/2.0")


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, 10.0)  # SIGTERM to the main process stops its children too
