"""An enrolled overlay, as its README section runs it (issue 15): `peerphone ca` enrolls the
nodes, they join each other, a node the authority did not enroll is refused and counted, and
one it revoked is shut out once the revocation has spread."""

from __future__ import annotations

import re
import time
from pathlib import Path

from peerphone.app.config import DEFAULT_OVERLAY, parse_hostport
from peerphone.app.wiring import open_client
from peerphone.core.wire.messages import StatAns
from peerphone.net.loop import run

from tests.procs import peerphone, start_peer, stop


def _stat(*peers: str, state_dir: Path) -> list[StatAns]:
    """The diagnostics of `peers`, through one client (of the identity in `state_dir`)."""
    async def ask() -> list[StatAns]:
        driver = await open_client(parse_hostport(peers[0], 0), DEFAULT_OVERLAY, state_dir=state_dir)
        try:
            await driver.joined
            return [await driver.stat(parse_hostport(p, 0)) for p in peers]
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
        (stat,) = _stat(first.addr, state_dir=tmp_path / "operator")
        assert stat.successors[0] == peers[1].node_id
        assert dict(stat.counters)["refused.link_identity"] >= 1  # its certificate gets it no link
        # One-shot commands too need an identity of the overlay's:
        assert peerphone("stat", "--via", first.addr, "--state-dir", str(tmp_path / "operator")).returncode == 0
        assert peerphone("stat", "--via", first.addr, timeout=60).returncode != 0
    finally:
        stop(peers)


def _lists(stat: StatAns, node_id: int) -> bool:
    return node_id in (*stat.successors, *stat.fingers, stat.pred)


def test_a_revoked_node_is_shut_out_once_its_revocation_has_spread(tmp_path: Path):
    ca = tmp_path / "ca"
    assert peerphone("ca", "init", str(ca)).returncode == 0
    serials = {}
    for node in ("n1", "n2", "n3", "mole"):
        issued = peerphone("ca", "issue", str(ca), "--state-dir", str(tmp_path / node))
        serials[node] = re.search(r"serial ([0-9a-f]+)", issued.stdout).group(1)  # type: ignore[union-attr]
    first = start_peer("--state-dir", str(tmp_path / "n1"))
    peers = [first]
    try:
        peers += [start_peer("--state-dir", str(tmp_path / n), bootstrap=first.addr) for n in ("n2", "n3")]
        mole = start_peer("--state-dir", str(tmp_path / "mole"), bootstrap=first.addr)
        peers.append(mole)
        honest = [p.addr for p in peers[:3]]
        deadline = time.monotonic() + 30
        while not any(_lists(s, mole.node_id) for s in _stat(*honest, state_dir=ca)):  # each round is the wait
            assert time.monotonic() < deadline, "the mole never joined"
        revoked = peerphone("ca", "revoke", str(ca), serials["mole"], "--via", first.addr)
        assert revoked.returncode == 0 and f"revoked serial {serials['mole']}" in revoked.stdout, revoked.stderr
        # Each peer fetches the revocations every 60 maintenance periods (6 s here):
        deadline = time.monotonic() + 40
        while True:  # each round of STATs (a client of its own, then three answers) is the wait
            stats = _stat(*honest, state_dir=ca)
            if all(dict(s.counters).get("revoked") == 1 and not _lists(s, mole.node_id) for s in stats):
                break
            assert time.monotonic() < deadline, [(dict(s.counters).get("revoked"), _lists(s, mole.node_id))
                                                 for s in stats]
        stop([mole])
        again = peerphone("peer", "--listen", "127.0.0.1:0", "--sip-listen", "off", "--role", "peer",
                          "--state-dir", str(tmp_path / "mole"), "--bootstrap", first.addr, timeout=60)
        assert again.returncode == 1 and "join failed" in again.stderr, again.stderr
        assert dict(_stat(first.addr, state_dir=ca)[0].counters)["refused.revoked"] >= 1
        # The authority's own list holds it, and storing it again changes nothing:
        assert serials["mole"] in (ca / "revoked").read_text()
        assert peerphone("ca", "revoke", str(ca), "--via", first.addr).returncode == 0
    finally:
        stop(peers)
