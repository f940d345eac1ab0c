"""Real peer and phone processes for tests: started on 127.0.0.1:0, stopped by PID at teardown."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from peerphone.app.procs import stop_process
from peerphone.core.wire.messages import StatAns

START_TIMEOUT_S = 20


def peerphone(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "peerphone", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@dataclass
class LineProc:
    """A child process whose stdout lines are read by a thread, so a test can wait for one."""

    proc: subprocess.Popen[bytes]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, cmd: list[str], stdin: int = subprocess.DEVNULL, env: dict[str, str] | None = None) -> "LineProc":
        """`env`: added to this process's environment."""
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin,
                                env={**os.environ, **env} if env else None)
        me = cls(proc)
        me.readers = [threading.Thread(target=me._read, daemon=True),
                      threading.Thread(target=me._drain_stderr, daemon=True)]
        for reader in me.readers:
            reader.start()
        return me

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace"))
            del self.stderr[:-200]

    def expect(self, pattern: str, timeout: float = START_TIMEOUT_S) -> re.Match[str]:
        """The first new line matching `pattern`; lines before it are kept in `seen`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.01, left))
            except queue.Empty:
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} in {timeout} s; saw {self.seen[-10:]}; "
                                         f"stderr {''.join(self.stderr[-15:])}") from None
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def collect(self, seconds: float) -> list[str]:
        """Every line that comes within `seconds` (kept in `seen` too)."""
        deadline, got = time.monotonic() + seconds, []
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.lines.get(timeout=left))
            except queue.Empty:
                break
        self.seen += got
        return got

    def saw(self, pattern: str, timeout: float = START_TIMEOUT_S) -> str:
        """A line matching `pattern`, already seen or still to come."""
        for line in self.seen:
            if re.search(pattern, line):
                return line
        return self.expect(pattern, timeout).string

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        stop_process(self.proc, close=False)
        for reader in self.readers:  # they read to the end before the pipes close
            reader.join(5)
        stop_process(self.proc)


@dataclass
class PeerProc:
    line_proc: LineProc
    addr: str  # HOST:PORT of the overlay
    node_id: int
    sip: str  # HOST:PORT of the SIP front
    sip_tls: str  # HOST:PORT of its SIP over TLS

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.line_proc.proc


def start_peer(*extra: str, bootstrap: str | None = None) -> PeerProc:
    """A peer for the test's overlay; a peer whatever its link (a busy machine answering late at a
    100 ms period is no lossy link) unless `extra` says --role auto."""
    cmd = [sys.executable, "-m", "peerphone", "peer", "--listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0",
           "--maintenance-ms", "100", "--role", "peer", *extra]
    if bootstrap:
        cmd += ["--bootstrap", bootstrap]
    p = LineProc.start(cmd)
    try:
        listening = p.expect(r"^listening (\S+) id=([0-9a-f]+)$")
        sip = p.expect(r"^sip ((\S+):\d+) domain=\S+(?: tls=(\d+))?")
    except AssertionError:
        p.stop()
        raise
    return PeerProc(p, listening.group(1), int(listening.group(2), 16), sip.group(1),
                    f"{sip.group(2)}:{sip.group(3)}" if sip.group(3) else "")


def stop(peers: list[PeerProc]) -> None:
    for p in peers:
        if p.proc.poll() is None:
            p.proc.kill()
        p.line_proc.stop()


def stat_all(addrs: list[str]) -> list[StatAns]:
    """The diagnostics of the peers at `addrs` (HOST:PORT), through a client of the first."""
    from peerphone.app.config import DEFAULT_OVERLAY, parse_hostport
    from peerphone.app.wiring import open_client
    from peerphone.net.loop import run

    async def ask() -> list[StatAns]:
        driver = await open_client(parse_hostport(addrs[0], 0), DEFAULT_OVERLAY)
        try:
            await driver.joined
            return [await driver.stat(parse_hostport(a, 0)) for a in addrs]
        finally:
            driver.close()

    return run(ask())
