"""`peerphone lab`: N real peer processes on 127.0.0.1, measured from a client.

Phases: start the peers, wait until every routing table matches the oracle
(ring: successor, predecessor and fingers; Kademlia: the XOR-nearest contact),
store M values through random peers, fetch each through another peer, optionally
SIGKILL a fraction of the peers, wait for repair (tables correct again and no
replica push pending) and fetch everything again. Every process started here is
stopped here, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..core.ids import id_from_name
from ..core.limits import REPLICAS
from ..core.overlay import Topology
from ..core.stats import percentile
from ..core.usages import MODEL_OF, Kind
from ..core.wire.messages import Addr, Entry, FetchAns, StatAns
from ..net.loop import run
from ..net.udp import OverlayError, UdpDriver
from ..sim.engine import Oracle
from .config import ConfigError
from .procs import child_env, peerphone_command, stop_process
from .wiring import open_client

LAB_OVERLAY = "peerphone.lab"
LOOKUP_STEPS = ("CLOSEST", "CLOSEST_ANS")  # Kademlia's lookups, counted with the operation they serve
START_TIMEOUT_S = 30.0
STABLE_TIMEOUT_S = 90.0
PEERS_MAX = 128
KILL_MAX = 0.6


@dataclass(frozen=True)
class LabSpec:
    peers: int
    ops: int
    kill: float
    seed: int
    maintenance_ms: int
    topology: Topology = Topology.CHORD

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LabSpec":
        if not 2 <= args.peers <= PEERS_MAX:
            raise ConfigError(f"--peers must be 2..{PEERS_MAX}")
        if not 1 <= args.ops <= 100_000:
            raise ConfigError("--ops must be 1..100000")
        if not 0.0 <= args.kill <= KILL_MAX:
            raise ConfigError(f"--kill must be 0..{KILL_MAX}")
        if args.kill > 0 and args.peers - round(args.kill * args.peers) < REPLICAS:
            raise ConfigError(f"--kill leaves fewer than {REPLICAS} peers")
        return cls(args.peers, args.ops, args.kill, args.seed, args.maintenance_ms, Topology(args.topology))


def process_cpu_s(pid: int) -> float:
    """User plus system CPU time of process `pid` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Peer:
    proc: subprocess.Popen[bytes]
    addr: Addr
    node_id: int
    sip: Addr  # its SIP front

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid)

    def rss_kib(self) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0


@dataclass
class Phase:
    name: str
    ok: int = 0
    failed: int = 0
    hops: list[int] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    messages: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        total = self.ok + self.failed
        rate = 100.0 * self.ok / total if total else 0.0
        per_op = self.messages / total if total else 0.0
        return (f"{self.name:<18} {self.ok:>6}/{total:<6} {rate:6.2f}%   hops p50 {percentile(self.hops, 50):>4.1f} "
                f"p99 {percentile(self.hops, 99):>4.1f} mean {_mean(self.hops):4.2f}   latency p50 "
                f"{percentile(self.latency_ms, 50):6.3f} ms p95 {percentile(self.latency_ms, 95):6.3f} ms p99 "
                f"{percentile(self.latency_ms, 99):6.3f} ms   msgs/op {per_op:4.1f}")


def _mean(values: list[Any]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


class Progress:
    """One line that rewrites itself on a terminal, and prints sparingly elsewhere."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last = 0.0

    def show(self, text: str, *, final: bool = False) -> None:
        now = time.monotonic()
        if self._tty:
            sys.stderr.write("\r\x1b[K" + text + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or now - self._last >= 2.0:
            sys.stderr.write(text + "\n")
            self._last = now


class Lab:
    def __init__(self, spec: LabSpec, logdir: Path) -> None:
        self.spec = spec
        self.logdir = logdir
        self.rng = random.Random(spec.seed)
        self.peers: list[Peer] = []
        self.dead: list[Peer] = []
        self.progress = Progress()
        self.client: UdpDriver | None = None

    # -- processes --

    def _spawn(self, index: int, bootstrap: Addr | None) -> subprocess.Popen[bytes]:
        # Peers whatever their link (a loaded machine's slow answers are not a lossy link): the lab
        # measures the overlay, not the role policy.
        args = ["--log-level", "warning", "peer", "--role", "peer", "--listen", "127.0.0.1:0", "--overlay", LAB_OVERLAY,
                "--sip-listen", "127.0.0.1:0", "--maintenance-ms", str(self.spec.maintenance_ms),
                "--topology", self.spec.topology.value]
        if bootstrap is not None:
            args += ["--bootstrap", f"{bootstrap[0]}:{bootstrap[1]}"]
        stderr = open(self.logdir / f"peer-{index}.log", "wb")
        try:
            return subprocess.Popen(peerphone_command(*args), stdout=subprocess.PIPE, stderr=stderr,
                                    stdin=subprocess.DEVNULL, env=child_env())
        finally:
            stderr.close()

    async def _ready(self, proc: subprocess.Popen[bytes]) -> Peer:
        assert proc.stdout is not None
        lines = []
        for _ in range(2):  # "listening HOST:PORT id=HEX", then "sip HOST:PORT domain=D"
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), START_TIMEOUT_S)
            lines.append(line.decode().split())
        first, second = lines
        if len(first) != 3 or first[0] != "listening" or len(second) < 2 or second[0] != "sip":
            raise RuntimeError(f"peer did not start (logs in {self.logdir})")
        return Peer(proc, _hostport(first[1]), int(first[2].removeprefix("id="), 16), _hostport(second[1]))

    async def start(self) -> None:
        self.peers.append(await self._ready(self._spawn(0, None)))
        procs = [self._spawn(i, self.rng.choice(self.peers).addr) for i in range(1, self.spec.peers)]
        for i, proc in enumerate(procs, start=2):
            self.peers.append(await self._ready(proc))
            self.progress.show(f"starting peers: {i}/{self.spec.peers}")
        self.progress.show(f"started {self.spec.peers} peer processes", final=True)
        self.client = await open_client(self.peers[0].addr, LAB_OVERLAY, self.spec.topology)

    def stop(self) -> None:
        """SIGTERM (a graceful leave) to every live peer, SIGKILL to any that lingers."""
        for peer in self.peers:
            if peer.proc.poll() is None:
                peer.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for peer in [*self.peers, *self.dead]:
            stop_process(peer.proc, max(0.0, deadline - time.monotonic()))
        if self.client is not None:
            self.client.close()

    # -- measurements --

    async def stat_all(self) -> dict[int, StatAns]:
        assert self.client is not None
        client = self.client

        async def one(peer: Peer) -> StatAns | None:
            try:
                return await client.stat(peer.addr)
            except OverlayError:
                return None

        answers = await asyncio.gather(*(one(p) for p in self.peers))
        return {a.node_id: a for a in answers if a is not None}

    def _consistent(self, stats: dict[int, StatAns]) -> int:
        """How many peers have routing tables as the oracle says and no replica push pending."""
        oracle = Oracle(sorted(p.node_id for p in self.peers))
        good = 0
        for node_id in oracle.ids:
            s = stats.get(node_id)
            if s is not None and s.replication_pending == 0:
                neighbours_ok, wrong_fingers = oracle.judge(s, self.spec.topology)
                good += neighbours_ok and wrong_fingers == 0
        return good

    async def wait_stable(self, what: str) -> float:
        started = time.monotonic()
        while True:
            stats = await self.stat_all()
            good = self._consistent(stats)
            elapsed = time.monotonic() - started
            self.progress.show(f"{what}: {good}/{len(self.peers)} peers match the oracle ({elapsed:.1f} s)")
            if good == len(self.peers):
                self.progress.show(f"{what}: routing tables and replicas settled in {elapsed:.1f} s", final=True)
                return elapsed
            if elapsed > STABLE_TIMEOUT_S:
                raise RuntimeError(f"{what}: overlay not stable after {STABLE_TIMEOUT_S:.0f} s "
                                   f"(logs in {self.logdir})")
            await asyncio.sleep(self.spec.maintenance_ms / 1000)

    async def _messages(self, codes: Iterable[str]) -> int:
        stats = await self.stat_all()
        names = {f"sent.{c}" for c in codes}
        total = sum(v for s in stats.values() for k, v in s.counters if k in names)
        assert self.client is not None and self.client.node is not None
        return total + sum(v for k, v in self.client.node.counters.items() if k in names)

    async def _measure(self, name: str, codes: tuple[str, ...], keys: list[str],
                       op: Callable[[str, Peer], Callable[[Any, int], int]],
                       check: Callable[[str, Any], bool]) -> Phase:
        assert self.client is not None
        phase = Phase(name)
        before = await self._messages(codes)
        for i, key in enumerate(keys):
            via = self.rng.choice(self.peers)
            started = time.perf_counter()
            done = await self.client.request(op(key, via))
            phase.latency_ms.append((time.perf_counter() - started) * 1000)
            if done.error is None and check(key, done.answer):
                phase.ok += 1
                phase.hops.append(max(0, done.hops - 1))  # not counting the client's hop to its peer
            else:
                phase.failed += 1
                if len(phase.failures) < 5:
                    why = done.error.reason if done.error is not None else f"wrong answer {done.answer}"
                    phase.failures.append(f"{key}: {why}")
            if i % 50 == 0 or i == len(keys) - 1:
                self.progress.show(f"{name}: {i + 1}/{len(keys)} ({phase.failed} failed)")
        self.progress.show(f"{name}: {len(keys)} done, {phase.failed} failed", final=True)
        phase.messages = await self._messages(codes) - before
        return phase

    async def store(self, keys: list[str]) -> Phase:
        stamp = time.time_ns() // 1_000_000

        def op(key: str, via: Peer) -> Callable[[Any, int], int]:
            entry = Entry(None, _value_of(key), stamp, 3600)
            return lambda node, now: node.store(id_from_name(key), Kind.BLOB, MODEL_OF[Kind.BLOB], [entry],
                                                now_ms=now, first_hop=via.addr)

        return await self._measure("store", ("STORE", "STORE_ANS", *LOOKUP_STEPS), keys, op, lambda key, answer: True)

    async def fetch(self, name: str, keys: list[str]) -> Phase:
        def op(key: str, via: Peer) -> Callable[[Any, int], int]:
            return lambda node, now: node.fetch(id_from_name(key), Kind.BLOB, now_ms=now, first_hop=via.addr)

        def check(key: str, answer: Any) -> bool:
            return isinstance(answer, FetchAns) and [e.value for e in answer.entries] == [_value_of(key)]

        return await self._measure(name, ("FETCH", "FETCH_ANS", *LOOKUP_STEPS), keys, op, check)

    def kill(self, keys: list[str]) -> list[Peer]:
        """SIGKILL a random set of peers that leaves at least one holder of every value.

        r replicas survive any r-1 simultaneous failures of one replica set, and no
        more; the loss rate under unconstrained failures is the simulator's figure.
        """
        count = round(self.spec.kill * len(self.peers))
        oracle = Oracle(sorted(p.node_id for p in self.peers))
        holders = [frozenset(oracle.replica_set(id_from_name(key), REPLICAS, self.spec.topology)) for key in keys]
        ring = sorted(self.peers, key=lambda p: p.node_id)
        for _ in range(10_000):
            victims = set(self.rng.sample(range(len(ring)), count))
            dead = {ring[i].node_id for i in victims}
            if not any(h <= dead for h in holders):
                break
        else:
            raise ConfigError("--kill too high to leave a replica of every value")
        chosen = [ring[i] for i in sorted(victims)]
        for peer in chosen:
            peer.proc.kill()
            peer.proc.wait()
            self.peers.remove(peer)
            self.dead.append(peer)
        return chosen


def _hostport(text: str) -> Addr:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _value_of(key: str) -> bytes:
    return f"value of {key}".encode()


async def _run(spec: LabSpec, logdir: Path) -> int:
    lab = Lab(spec, logdir)
    print(f"peerphone lab: {spec.peers} peers, {spec.topology.value}, {spec.ops} values, kill {spec.kill:.0%}, "
          f"seed {spec.seed}, maintenance every {spec.maintenance_ms} ms")
    try:
        await lab.start()
        settle_s = await lab.wait_stable("stabilizing")
        keys = [f"lab-{spec.seed}-{i}" for i in range(spec.ops)]
        phases = [await lab.store(keys), await lab.fetch("fetch", keys)]
        rss = [p.rss_kib() for p in lab.peers]
        repair_s = None
        if spec.kill > 0:
            victims = lab.kill(keys)
            print(f"killed {len(victims)} peers with SIGKILL (never all {REPLICAS} holders of a value)")
            repair_s = await lab.wait_stable("repairing")
            phases.append(await lab.fetch("fetch after kill", keys))
    finally:
        lab.stop()
    print()
    print(f"overlay settled in {settle_s:.1f} s"
          + (f"; repaired in {repair_s:.1f} s" if repair_s is not None else ""))
    for phase in phases:
        print(phase.line())
        for failure in phase.failures:
            print(f"    failed: {failure}")
    print(f"RSS per peer: mean {statistics.fmean(rss) / 1024:.1f} MiB, max {max(rss) / 1024:.1f} MiB")
    failed = sum(p.failed for p in phases)
    print("result: " + ("every operation succeeded" if failed == 0 else f"{failed} operations FAILED"))
    return 0 if failed == 0 else 1


def run_lab(spec: LabSpec) -> int:
    with tempfile.TemporaryDirectory(prefix="peerphone-lab-") as tmp:
        try:
            return run(_run(spec, Path(tmp)))
        except RuntimeError as e:
            print(f"peerphone lab: {e}", file=sys.stderr)
            for log in sorted(Path(tmp).glob("peer-*.log"))[:3]:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                if tail:
                    print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)
            return 1


