"""An enrolled overlay, as its README section runs it (issue 15): `peerphone ca` enrolls the
nodes, they join each other, a node the authority did not enroll is refused and counted, and
one it revoked is shut out once the revocation has spread."""

from __future__ import annotations

import re
import time
from pathlib import Path

from peerphone.app.config import DEFAULT_OVERLAY, parse_hostport
from peerphone.app.wiring import open_client
from peerphone.core.ids import id_from_name
from peerphone.core.usages import Kind, Registration
from peerphone.core.wire.messages import DataModel, Entry, StatAns
from peerphone.net.loop import run
from peerphone.net.udp import OverlayError

from tests.procs import peerphone, start_peer, stop
from tests.sip.world import DOMAIN, call_and_hear, start_phone


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
        deadline = time.monotonic() + 60
        while True:  # each round of STATs (a client of its own, then three answers) is the wait
            stats = _stat(*honest, state_dir=ca)
            if all(dict(s.counters).get("revoked") == 1 and not _lists(s, mole.node_id) for s in stats):
                break
            assert time.monotonic() < deadline, [  # what each peer did about revocations, if one never learned
                (dict(s.counters).get("revoked"), _lists(s, mole.node_id),
                 {k: v for k, v in s.counters if "revo" in k or "fetched" in k or k.startswith("drop.")})
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


def test_a_name_is_registered_only_by_the_nodes_the_authority_named_for_it(tmp_path: Path):
    ca = tmp_path / "ca"
    bob, alice = f"sip:bob@{DOMAIN}", f"sip:alice@{DOMAIN}"
    assert peerphone("ca", "init", str(ca)).returncode == 0
    for node, names in (("n1", ()), ("bob", (bob,)), ("alice", (alice,)), ("mole", ())):
        issued = peerphone("ca", "issue", str(ca), "--state-dir", str(tmp_path / node),
                           *[arg for name in names for arg in ("--name", name)])
        assert issued.returncode == 0, issued.stderr
    first = start_peer("--state-dir", str(tmp_path / "n1"))
    phones = []
    try:
        own_peer = ("--listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0", "--bootstrap", first.addr)
        # A phone whose certificate does not name its AOR is told so before it registers:
        refused = peerphone("phone", "--aor", bob, *own_peer, "--state-dir", str(tmp_path / "mole"), timeout=60)
        assert refused.returncode == 2 and "does not name sip:bob@" in refused.stderr, refused.stderr
        phones.append(start_phone("bob", None, *own_peer, "--state-dir", str(tmp_path / "bob"), record_dir=tmp_path))
        phones.append(start_phone("alice", None, *own_peer, "--state-dir", str(tmp_path / "alice")))
        call_and_hear(phones[1], phones[0], bob, "alice")  # found through its ticket, from the other phone's front

        # The mole, a node of the overlay, stores a registration of its own for Bob: refused.
        async def store_over_bob() -> str:
            driver = await open_client(parse_hostport(first.addr, 0), DEFAULT_OVERLAY, state_dir=tmp_path / "mole")
            try:
                await driver.joined
                record = Registration("sip:bob@127.0.0.1:9", ("127.0.0.1", 9), driver.node.me.node_id)
                entry = Entry(b"m" * 20, record.to_bytes(), int(time.time() * 1000), 600)
                try:
                    await driver.store(id_from_name(bob), Kind.SIP_REGISTRATION, DataModel.DICTIONARY, [entry])
                except OverlayError as e:
                    return str(e)
                return "stored"
            finally:
                driver.close()

        assert "no ticket of the overlay's authority names this key" in run(store_over_bob())
        peers = [first.addr] + [next(m.group(1) for line in phone.seen
                                     if (m := re.match(r"^listening (\S+) id=", line))) for phone in phones]
        stats = _stat(*peers, state_dir=ca)  # whichever holds Bob's name counted it
        assert sum(dict(s.counters).get("refused.not_named", 0) for s in stats) >= 1
        call_and_hear(phones[1], phones[0], bob, "alice")  # Bob's calls still reach Bob
    finally:
        for phone in phones:
            phone.stop()
        stop([first])
