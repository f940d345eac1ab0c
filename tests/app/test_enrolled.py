"""An enrolled overlay, as its README section runs it (issue 15): `peerphone ca` enrolls the
nodes, they join each other, and a node the authority did not enroll is refused and counted."""

from __future__ import annotations

from pathlib import Path

from peerphone.app.config import DEFAULT_OVERLAY, parse_hostport
from peerphone.app.wiring import open_client
from peerphone.core.wire.messages import StatAns
from peerphone.net.loop import run

from tests.procs import peerphone, start_peer, stop


def _stat(via: str, state_dir: Path) -> list[StatAns]:
    async def ask() -> list[StatAns]:
        driver = await open_client(parse_hostport(via, 0), DEFAULT_OVERLAY, state_dir=state_dir)
        try:
            await driver.joined
            return [await driver.stat(parse_hostport(via, 0))]
        finally:
            driver.close()

    return run(ask())


def test_enrolled_nodes_join_and_an_unenrolled_one_is_refused(tmp_path: Path):
    ca = tmp_path / "ca"
    assert peerphone("ca", "init", str(ca)).returncode == 0
    for node in ("n1", "n2", "operator"):
        issued = peerphone("ca", "issue", str(ca), "--state-dir", str(tmp_path / node))
        assert issued.returncode == 0 and issued.stdout.startswith("issued node id "), issued.stderr
    first = start_peer("--state-dir", str(tmp_path / "n1"))
    peers = [first]
    try:
        peers.append(start_peer("--state-dir", str(tmp_path / "n2"), bootstrap=first.addr))
        stranger = peerphone("peer", "--listen", "127.0.0.1:0", "--sip-listen", "off", "--role", "peer",
                             "--bootstrap", first.addr, timeout=60)  # ad hoc: a key of its own, no certificate
        assert stranger.returncode == 1 and "join failed" in stranger.stderr, stranger.stderr
        (stat,) = _stat(first.addr, tmp_path / "operator")
        assert stat.successors[0] == peers[1].node_id
        assert dict(stat.counters)["refused.identity"] >= 1
        # One-shot commands too need an identity of the overlay's:
        assert peerphone("stat", "--via", first.addr, "--state-dir", str(tmp_path / "operator")).returncode == 0
        assert peerphone("stat", "--via", first.addr, timeout=60).returncode != 0
    finally:
        stop(peers)
