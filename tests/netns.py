"""Hosts as network namespaces, for tests whose link must break (REAL-PARTS.md): a test makes
its namespaces, joins them with veth pairs on 10.231.0.0/16 addresses that exist only inside
them, runs real processes in them, and removes everything at the end. nftables in a host's
namespace drops a share of its datagrams (`numgen random`) or what nobody asked for (conntrack).

Needs root, iproute2 and nftables (tools/setup --test installs nftables); a test skips, and
says why, where they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests.procs import LineProc

SUBNET = "10.231"


def need_namespaces() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing (tools/setup --test installs it)")


def _sh(*cmd: str, stdin: str | None = None) -> None:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")


class Hosts:
    """Namespaces named after this process, so that parallel runs do not meet."""

    def __init__(self) -> None:
        self.tag = f"pp{os.getpid() % 100_000}"
        self.namespaces: list[str] = []
        self.procs: list[LineProc] = []
        self._links = 0
        self._devices: dict[str, tuple[str, str]] = {}  # address -> (host, its device)

    def host(self, name: str) -> str:
        ns = f"{self.tag}-{name}"
        _sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def wire(self, a: str, b: str) -> tuple[str, str]:
        """A veth pair between hosts `a` and `b`, and each end's address."""
        self._links += 1
        net = f"{SUBNET}.{self._links}"
        ends = (f"{self.tag}a{self._links}", f"{self.tag}b{self._links}")
        _sh("ip", "link", "add", ends[0], "netns", a, "type", "veth", "peer", "name", ends[1], "netns", b)
        for ns, end, host in ((a, ends[0], 1), (b, ends[1], 2)):
            _sh("ip", "-n", ns, "addr", "add", f"{net}.{host}/24", "dev", end)
            _sh("ip", "-n", ns, "link", "set", end, "up")
            self._devices[f"{net}.{host}"] = (ns, end)
        return f"{net}.1", f"{net}.2"

    def router(self, ns: str) -> None:
        """Host `ns` forwards between its wires: the hosts behind it reach each other through it."""
        _sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

    def route_via(self, ns: str, gateway: str) -> None:
        """Host `ns` sends everything not on its own wires to `gateway`."""
        _sh("ip", "-n", ns, "route", "add", "default", "via", gateway)

    def readdress(self, old: str, host: int) -> str:
        """A new lease: the device that has `old` loses it, then gets .`host` of its network."""
        ns, end = self._devices.pop(old)
        new = f"{old.rsplit('.', 1)[0]}.{host}"
        _sh("ip", "-n", ns, "addr", "del", f"{old}/24", "dev", end)
        _sh("ip", "-n", ns, "addr", "add", f"{new}/24", "dev", end)
        self._devices[new] = (ns, end)
        return new

    def run(self, ns: str, *args: str, stdin: int = subprocess.DEVNULL) -> LineProc:
        """`peerphone ARGS` in host `ns`, stopped at the end."""
        proc = LineProc.start(["ip", "netns", "exec", ns, sys.executable, "-m", "peerphone", *args], stdin=stdin)
        self.procs.append(proc)
        return proc

    def peerphone(self, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "peerphone", *args],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def lossy(self, ns: str, percent: int) -> None:
        """Drop `percent`% of the datagrams host `ns` sends and of those it receives (not loopback's)."""
        rules = "".join(
            f"chain {hook} {{ type filter hook {hook} priority 0; policy accept; {side} \"lo\" accept; "
            f"numgen random mod 100 < {percent} counter drop; }}\n"
            for hook, side in (("input", "iifname"), ("output", "oifname")))
        _sh("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=f"table inet lossy {{\n{rules}}}\n")

    def heal(self, ns: str) -> None:
        _sh("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "lossy")

    def unsolicited_dropped(self, ns: str) -> None:
        """Host `ns` gets only answers to what it sent (a NAT's or a firewall's filtering): a
        datagram from an address and port it has not sent to is dropped."""
        rules = ("chain input { type filter hook input priority 0; policy drop; iifname \"lo\" accept; "
                 "ct state established,related accept; }\n")
        _sh("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=f"table inet closed {{\n{rules}}}\n")

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@dataclass(frozen=True)
class Overlay:
    rest: str  # the host of three peers
    subject: str  # a second host wired to it, empty: for the node under test
    subject_ip: str
    bootstrap: str  # the first peer's overlay address
    front: str  # its SIP front's, or "" without one


def overlay_beside(lab: Hosts, maintenance_ms: str, domain: str | None = None) -> Overlay:
    """Three peers on one host (the first with a SIP front for `domain`, if given) and a second
    host wired to it."""
    rest, subject = lab.host("rest"), lab.host("subject")
    rest_ip, subject_ip = lab.wire(rest, subject)
    sip = ["--sip-listen", f"{rest_ip}:0", "--domain", domain] if domain else ["--sip-listen", "off"]
    first = lab.run(rest, "peer", "--role", "peer", "--listen", f"{rest_ip}:0", *sip,
                    "--maintenance-ms", maintenance_ms)
    bootstrap = first.expect(r"^listening (\S+) ").group(1)
    front = first.expect(r"^sip (\S+) ").group(1) if domain else ""
    for _ in range(2):
        lab.run(rest, "peer", "--role", "peer", "--listen", f"{rest_ip}:0", "--sip-listen", "off",
                "--maintenance-ms", maintenance_ms, "--bootstrap", bootstrap).expect(r"^listening ")
    return Overlay(rest, subject, subject_ip, bootstrap, front)


@contextmanager
def hosts() -> Iterator[Hosts]:
    need_namespaces()
    made = Hosts()
    try:
        yield made
    finally:
        made.close()
