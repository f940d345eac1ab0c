"""Floods against real peer processes on loopback (issue 11): a peer flooded from many source
ports stays in its neighbours' tables, and after a storm of REGISTERs the overlay settles.
Every flood is bounded and stops by itself."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from peerphone.core.security import Identity, Trust
from peerphone.net.links import Links

from tests.procs import stat_all, stop
from tests.sip.raw import free_port
from tests.sip.world import DOMAIN, start_overlay

FLOOD_S = 5.0
PORTS = 256


def _flood(target: str) -> int:
    """DTLS hellos from PORTS ports: each asks for a handshake, the costliest thing a stranger
    can ask of a peer before it has a link."""
    host, port = target.rsplit(":", 1)
    hello_of = Links(Identity.ad_hoc(os.urandom, 0), Trust(work_bits=0).admit)
    hello_of.send(b"x", (host, int(port)), now_ms=0)
    ((ping, _),) = hello_of.datagrams_to_send()
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(PORTS)]
    sent = 0
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        end = time.monotonic() + FLOOD_S
        while time.monotonic() < end:
            for s in sockets:
                try:
                    s.sendto(ping, (host, int(port)))
                    sent += 1
                except BlockingIOError:
                    pass
    finally:
        for s in sockets:
            s.close()
    return sent


def _ring_holds(victim_id: int, peers: list[str]) -> bool:
    return all(victim_id in (s.pred, *s.successors) for s in stat_all(peers) if s.node_id != victim_id)


def test_a_peer_flooded_from_many_ports_stays_in_its_neighbours_tables():
    peers = start_overlay(3)
    try:
        victim = peers[0]
        addrs = [p.addr for p in peers]
        deadline = time.monotonic() + 30
        # On a loaded machine the ring can take longer than start_overlay's wait.
        while not _ring_holds(victim.node_id, addrs):
            assert time.monotonic() < deadline, "the ring never closed before the flood"
            time.sleep(0.2)
        sent = _flood(victim.addr)
        stats = stat_all([p.addr for p in peers])
        flooded = next(s for s in stats if s.node_id == victim.node_id)
        others = [s for s in stats if s.node_id != victim.node_id]
        counters = dict(flooded.counters)
        # The flood was there (what the kernel did not drop for a full buffer), and cost no state:
        # a hello got a cookie back, or past the rate nothing, and none a link.
        assert counters.get("link.hello_answered", 0) + counters["drop.link_hello_rate"] > sent // 50, (sent, counters)
        assert counters["drop.link_hello_rate"] > counters.get("link.hello_answered", 0), counters
        assert counters.get("link.accept", 0) <= 4, counters  # the other two peers' links, and stat's
        assert all(victim.node_id in (s.pred, *s.successors) for s in others), [(s.pred, s.successors) for s in others]
        taken_for_dead = [{k: v for k, v in s.counters if k.startswith(("node_failed", "timeouts", "unproven"))}
                          for s in stats if dict(s.counters).get("node_failed", 0)]
        if taken_for_dead:
            # Since identities (issue 15) a neighbour of the flooded peer takes it for dead about
            # once in 5 to 10 runs, and then back (the assertion above holds); before, 0 in 12.
            # Not understood yet: kept visible as an expected failure, not asserted away.
            pytest.xfail(f"a neighbour took the flooded peer for dead: {taken_for_dead}")
    finally:
        stop(peers)


STORM_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register storm">
  <send retrans="500"><![CDATA[
REGISTER sip:[field1] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[field0]@[field1]>;tag=[call_number]
To: <sip:[field0]@[field1]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:[field0]@[local_ip]:[local_port]>
Max-Forwards: 70
Expires: 600
Content-Length: 0

  ]]></send>
  <recv response="200" optional="false"/>
</scenario>
"""


@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (Debian sip-tester) is installed by tools/setup --test")
def test_after_a_register_storm_the_overlay_settles_and_nobody_is_taken_for_dead(tmp_path: Path):
    peers = start_overlay(4)
    try:
        (tmp_path / "storm.xml").write_text(STORM_XML)
        (tmp_path / "users.csv").write_text("SEQUENTIAL\n" + "".join(f"s{i};{DOMAIN}\n" for i in range(3000)))
        subprocess.run(["sipp", "-sf", "storm.xml", "-inf", "users.csv", peers[0].sip, "-i", "127.0.0.1",
                        "-p", str(free_port()), "-r", "1500", "-m", "6000", "-l", "3000", "-nostdin",
                        "-timeout", "60s"], cwd=tmp_path, capture_output=True, timeout=120)
        deadline = time.monotonic() + 60
        while True:  # bounded: the replica pushes end, or the test fails
            stats = stat_all([p.addr for p in peers])
            if all(s.replication_pending == 0 for s in stats):
                break
            assert time.monotonic() < deadline, [(s.replication_pending, {k: v for k, v in s.counters if k.startswith(
                ("refused", "timeouts", "rpc_full", "drop", "alive"))}) for s in stats]
            time.sleep(0.1)  # a poll: each round of STATs is itself the wait
        assert sum(s.values for s in stats) >= 3000  # the storm was stored (each value on 3 peers)
        assert all(dict(s.counters).get("node_failed", 0) == 0 for s in stats)
        assert not [line for p in peers for line in p.line_proc.stderr if " failed" in line and "node " in line]
    finally:
        stop(peers)
