"""Real peer processes for tests: started on 127.0.0.1:0, stopped by PID at teardown."""

from __future__ import annotations

import selectors
import subprocess
import sys
from dataclasses import dataclass

START_TIMEOUT_S = 20


@dataclass
class PeerProc:
    proc: subprocess.Popen[bytes]
    addr: str  # HOST:PORT
    node_id: int


def peerphone(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "peerphone", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def start_peer(*extra: str, bootstrap: str | None = None) -> PeerProc:
    cmd = [sys.executable, "-m", "peerphone", "peer", "--listen", "127.0.0.1:0", "--maintenance-ms", "100", *extra]
    if bootstrap:
        cmd += ["--bootstrap", bootstrap]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(START_TIMEOUT_S):
            proc.kill()
            raise AssertionError("peer did not start")
    words = proc.stdout.readline().decode().split()
    assert words and words[0] == "listening", proc.stderr.read().decode() if proc.poll() is not None else words
    return PeerProc(proc, words[1], int(words[2].removeprefix("id="), 16))


def stop(peers: list[PeerProc]) -> None:
    for p in peers:
        if p.proc.poll() is None:
            p.proc.kill()
        p.proc.wait()
        for stream in (p.proc.stdout, p.proc.stderr):
            if stream is not None:
                stream.close()
