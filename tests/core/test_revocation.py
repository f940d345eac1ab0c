"""Revocation in an enrolled overlay (issue 15): only the authority writes it, every peer
learns it within a check period, and the revoked node is then shut out of tables, proofs,
answers and storage, in every topology."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from peerphone.core.access import NOT_AUTHORITY, REVOKED, Checks, store_refusal
from peerphone.core.events import RequestCompleted
from peerphone.core.ids import id_from_name
from peerphone.core.limits import LIFETIME_S_MAX
from peerphone.core.node import State
from peerphone.core.peer import PeerNode, make_peer
from peerphone.core.revocation import REVOCATIONS, SERIAL_BYTES, Revocation, Revoked, read_revocation
from peerphone.core.storage import Storage
from peerphone.core.usages import MODEL_OF, Kind
from peerphone.core.wire.messages import Code, DataModel, Entry, Fetch, FetchAns, Store

from tests.core.test_peer import completed
from tests.ring import OVERLAY, Ring, build, sealed

REV, DICT = Kind.REVOCATION, DataModel.DICTIONARY
T0 = 1_000_000


def revoke(ring: Ring, via: PeerNode, revoked: PeerNode) -> None:
    """The authority's store of `revoked`'s revocation, through `via` (as `ca revoke` does)."""
    assert ring.authority is not None
    entry = Revocation.of(revoked.identity.credential).entry(ring.now_ms, LIFETIME_S_MAX)
    via.store(REVOCATIONS, REV, DICT, [entry], now_ms=ring.now_ms, signer=ring.authority)
    ring.flush(via)


def lists(node: PeerNode, node_id: int) -> bool:
    stat = node.stat_local(now_ms=0)
    return node_id in (*stat.successors, *stat.fingers, stat.pred)


@pytest.mark.parametrize("mole_holds_them", [False, True], ids=["elsewhere", "held_by_the_mole"])
def test_a_revocation_spreads_and_the_revoked_node_is_shut_out(topology, mole_holds_them: bool) -> None:
    ring = build(6, seed=5, topology=topology, enrolled=True)
    holders = ring.replica_set(REVOCATIONS)
    if mole_holds_them:  # it stores its own revocation; the other replicas learn it from their copies
        mole = next(n for n in ring.live() if n.me.node_id == holders[0])
        honest = next(n for n in ring.live() if n.me.node_id not in holders)
    else:
        honest, mole = [n for n in ring.live() if n.me.node_id not in holders][:2]
    assert sum(lists(n, mole.me.node_id) for n in ring.live()) >= 1
    revoke(ring, honest, mole)
    ring.run(ring.timing.revocation_check_ms + 4 * ring.timing.maintenance_interval_ms)
    others = [n for n in ring.live() if n is not mole]
    assert [n.stat_local(now_ms=ring.now_ms).counters for n in others] and all(
        dict(n.stat_local(now_ms=ring.now_ms).counters)["revoked"] == 1 for n in others)
    assert not any(lists(n, mole.me.node_id) for n in others)
    # Alone now, it takes its own requests; those it sends to a peer go nowhere:
    h = mole.store(id_from_name("k"), Kind.BLOB, DataModel.SINGLE, [Entry(None, b"v", ring.now_ms, 60)],
                   now_ms=ring.now_ms, first_hop=honest.me.addr)
    ring.flush(mole)
    refused = honest.counters["refused.revoked"]
    ring.run(10_000)
    assert completed(ring, h, mole).error is not None
    assert honest.counters["refused.revoked"] > refused
    assert not any(n.storage.fetch(id_from_name("k"), Kind.BLOB, now_ms=ring.now_ms).entries for n in others)
    # and it cannot come back under the same certificate:
    again = make_peer(mole.identity, ("10.0.0.99", 4000), mole.config, rng=ring.rng, entropy=ring.rng.randbytes,
                      now_ms=ring.now_ms)
    ring.kill(mole)
    ring.nodes[again.me.addr] = again
    again.join([honest.me.addr], now_ms=ring.now_ms)
    ring.flush(again)
    ring.run(10_000)
    assert again.state is not State.JOINED
    assert not any(lists(n, mole.me.node_id) for n in others)


def test_a_revoked_node_that_holds_the_revocations_and_withholds_them_delays_nobody(topology) -> None:
    ring = build(6, seed=5, topology=topology, enrolled=True)
    mole = next(n for n in ring.live() if n.me.node_id == ring.replica_set(REVOCATIONS)[0])
    withheld = FetchAns(DataModel.DICTIONARY, ())
    answer_fetch = mole._on_fetch
    mole._request_handlers[Code.FETCH] = lambda msg, sender, now_ms: (  # type: ignore[assignment]
        (Code.FETCH_ANS, withheld) if isinstance(msg.body, Fetch) and msg.body.resource == REVOCATIONS
        else answer_fetch(msg, sender, now_ms))
    revoke(ring, next(n for n in ring.live() if n is not mole), mole)
    ring.run(2 * ring.timing.revocation_check_ms + 4 * ring.timing.maintenance_interval_ms)
    others = [n for n in ring.live() if n is not mole]
    assert all(dict(n.stat_local(now_ms=ring.now_ms).counters)["revoked"] == 1 for n in others)
    assert not any(lists(n, mole.me.node_id) for n in others)


def test_a_node_that_is_not_the_authority_cannot_revoke_another() -> None:
    ring = build(4, seed=6, enrolled=True)
    mole, victim = ring.live()[1], ring.live()[2]
    entry = Revocation.of(victim.identity.credential).entry(ring.now_ms, LIFETIME_S_MAX)
    h = mole.store(REVOCATIONS, REV, DICT, [entry], now_ms=ring.now_ms)  # sealed with its own, valid key
    ring.flush(mole)
    ring.run(ring.timing.revocation_check_ms * 2)
    assert "authority" in completed(ring, h, mole).error.reason  # type: ignore[union-attr]
    assert sum(n.counters["refused.not_authority"] for n in ring.live()) == 1
    assert all(dict(n.stat_local(now_ms=ring.now_ms).counters)["revoked"] == 0 for n in ring.live())
    assert sum(lists(n, victim.me.node_id) for n in ring.live()) >= 1


def test_the_access_rule_of_revocations() -> None:
    ring = Ring(seed=2, enrolled=True)
    assert ring.authority is not None
    node = ring.identity()
    entry = Revocation.of(ring.identity().credential).entry(T0, 3600)
    by_authority, by_node = (sealed(Store(REVOCATIONS, REV, DICT, (entry,), False), s) for s in (ring.authority, node))
    enrolled = Checks(OVERLAY, ring.authority.public_key)
    assert store_refusal(by_authority, Storage(), enrolled, T0) is None
    assert store_refusal(by_node, Storage(), enrolled, T0) is NOT_AUTHORITY
    assert store_refusal(by_authority, Storage(), Checks(OVERLAY), T0) is NOT_AUTHORITY  # ad hoc: nobody
    revoked = Revoked()
    revoked.add(Revocation.of(node.credential))
    blob = sealed(Store(id_from_name("k"), Kind.BLOB, MODEL_OF[Kind.BLOB], (Entry(None, b"v", T0, 60),), False), node)
    assert store_refusal(blob, Storage(), Checks(OVERLAY, ring.authority.public_key), T0) is None
    assert store_refusal(blob, Storage(), Checks(OVERLAY, ring.authority.public_key, revoked), T0) is REVOKED


@given(st.binary(max_size=40), st.binary(max_size=80))
def test_reading_a_revocation_never_raises(key: bytes, value: bytes) -> None:
    found = read_revocation(Entry(key, value, T0, 60))
    assert found is None or (len(key) == SERIAL_BYTES and found.entry(T0, 60).value == value)


def test_a_revocation_reads_back_as_written() -> None:
    credential = Ring(seed=3, enrolled=True).identity().credential
    revocation = Revocation.of(credential)
    assert read_revocation(revocation.entry(T0, 60)) == revocation
    revoked = Revoked()
    assert revoked.add(revocation) and not revoked.add(revocation)
    assert revoked.covers(credential) and revoked.node(credential.node_id) and len(revoked) == 1


def test_the_first_node_of_an_overlay_keeps_checking_though_it_answers_itself_while_alone() -> None:
    ring = Ring(seed=2, enrolled=True)
    alone = ring.add()
    ring.run(3 * ring.timing.revocation_check_ms + ring.timing.revocation_check_ms // 2)
    assert alone.counters["revocation_checks"] >= 3  # (a check it answered itself once stopped all the next ones)
    assert not [e for at, e in ring.events if at == alone.me.addr and isinstance(e, RequestCompleted)]
