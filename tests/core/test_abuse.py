"""The overlay against forged datagrams (issue 11): a claim changes nothing until the claimant
answers a nonce at its address, and nobody is made to answer a third party.

The attacker is an address no node has (the ring harness records what is sent there): a
process that never joined and answers nothing, or one that writes a real node's address as
its source.
"""

from __future__ import annotations

import pytest
from peerphone.core.errors import ErrorCode
from peerphone.core.ids import RING, id_from_name
from peerphone.core.limits import REGISTRATION_LIFETIME_S_MAX, REPLICA_PUSHES_IN_FLIGHT_MAX
from peerphone.core.overlay import Topology
from peerphone.core.peer import PeerNode
from peerphone.core.storage import Storage
from peerphone.core.usages import Kind
from peerphone.core.wire import decode, encode
from peerphone.core.wire.messages import (
    EMPTY,
    Addr,
    Announce,
    Body,
    Closest,
    Code,
    DataModel,
    Dest,
    DestKind,
    Entry,
    Fetch,
    Leave,
    Message,
    NodeInfo,
    Stat,
    StatAns,
)

from tests.core.test_peer import completed, get, put
from tests.ring import OVERLAY, Ring, build

STRANGER: Addr = ("10.66.0.1", 9)
THIRD: Addr = ("10.77.0.1", 5060)
RINGS = (Topology.CHORD, Topology.ONEHOP)


def forge(ring: Ring, node: PeerNode, code: Code, body: Body, via: tuple[int, ...], *, src: Addr = STRANGER,
          dest: tuple[Dest, ...] | None = None, reply_to: Addr | None = None) -> bytes:
    data = encode(Message(32, via, dest if dest is not None else (Dest(DestKind.NODE, node.me.node_id),),
                          0xF0F0, code, body, None, reply_to), OVERLAY)
    node.receive_datagram(data, src, now_ms=ring.now_ms)
    ring.flush(node)
    return data


def sent_to(ring: Ring, addr: Addr) -> list[Code]:
    return [decode(data, OVERLAY).code for data, to in ring.strays if to == addr]


def with_values(topology: Topology) -> tuple[Ring, PeerNode, list[str]]:
    ring = build(6, topology=topology)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    keys = [f"k{i}" for i in range(12)]
    for key in keys:
        assert put(ring, client, key, key.encode(), ring.live()[0]).error is None
    return ring, client, keys


@pytest.mark.parametrize("topology", RINGS)
def test_a_forged_update_from_a_stranger_takes_no_range_and_no_value(topology):
    ring, client, keys = with_values(topology)
    victim = max(ring.live(), key=lambda n: len(n.storage))
    pred_before = victim.topology.pred
    forge(ring, victim, Code.UPDATE, EMPTY, ((victim.me.node_id - 1) % RING,))
    ring.run(3000)
    assert victim.topology.pred == pred_before
    assert set(sent_to(ring, STRANGER)) == {Code.PROVE}  # the challenge, nothing else
    assert victim.counters["unproven"] == 1
    for key in keys:
        assert get(ring, client, key, ring.live()[1]).answer.entries[0].value == key.encode()
    assert set(sent_to(ring, STRANGER)) == {Code.PROVE}


@pytest.mark.parametrize("topology", RINGS)
def test_a_known_id_from_a_new_address_does_not_move_it(topology):
    ring = build(5, topology=topology)
    victim = ring.live()[0]
    pred = victim.topology.pred
    forge(ring, victim, Code.UPDATE, EMPTY, (pred.node_id,))
    ring.run(10)  # before the real predecessor's next stabilize would put its address back
    assert victim.topology.pred == pred
    assert victim.topology.address_of(pred.node_id) == pred.addr


@pytest.mark.parametrize("topology", RINGS)
def test_a_leave_in_a_neighbour_s_name_is_checked_with_the_neighbour(topology):
    ring = build(5, topology=topology)
    victim = ring.live()[0]
    succ = victim.topology.succ
    impostor = NodeInfo((victim.me.node_id + 1) % RING, STRANGER)
    # From the stranger's own address: held, and dropped when the stranger stays silent.
    forge(ring, victim, Code.LEAVE, Leave(victim.me, (impostor,)), (succ.node_id,))
    # With the successor's address written as the source: the successor is asked, and says no.
    forge(ring, victim, Code.LEAVE, Leave(victim.me, (impostor,)), (succ.node_id,), src=succ.addr)
    ring.run(3000)
    assert victim.topology.succ == succ
    assert victim.counters["forged_leave"] == 1
    assert impostor.node_id not in {s.node_id for s in victim.topology.successors}
    assert victim.topology.address_of(impostor.node_id) is None
    assert set(sent_to(ring, STRANGER)) == {Code.PROVE}


def test_a_real_leave_still_closes_the_gap_at_once():
    ring = build(6, topology=Topology.CHORD)
    leaver = ring.live()[2]
    pred = next(n for n in ring.live() if n.topology.succ.node_id == leaver.me.node_id)
    leaver.leave(now_ms=ring.now_ms)
    ring.flush(leaver)
    ring.run(100)  # well within one maintenance round: the neighbours heard and checked
    assert pred.topology.succ.node_id == leaver.topology.succ.node_id
    assert pred.counters["forged_leave"] == 0


def test_a_forged_announcement_adds_and_removes_no_member():
    ring = build(6, topology=Topology.ONEHOP)
    victim, member, other = ring.live()[:3]
    impostor = NodeInfo(12345, STRANGER)
    forge(ring, victim, Code.ANNOUNCE, Announce((impostor,), (other.me.node_id,)), (member.me.node_id,),
          src=member.me.addr)
    ring.run(3000)
    assert not victim.topology.knows(impostor.node_id)
    assert victim.topology.knows(other.me.node_id)


def test_a_stranger_s_lookup_step_does_not_make_it_a_contact():
    ring = build(6, topology=Topology.KADEMLIA)
    victim = ring.live()[0]
    stranger_id = victim.me.node_id ^ 1  # it would land in the closest bucket
    forge(ring, victim, Code.CLOSEST, Closest(victim.me.node_id), (stranger_id,))
    ring.run(3000)
    assert stranger_id not in victim.table
    assert set(sent_to(ring, STRANGER)) == {Code.PROVE}


def test_a_third_party_reply_to_gets_nothing(topology):
    ring, client, keys = with_values(topology)
    target = ring.live()[0]
    rid = id_from_name(keys[0])
    for code, body, dest in ((Code.FETCH, Fetch(rid, 1), (Dest(DestKind.RESOURCE, rid),)),
                             (Code.STAT, Stat(0), ())):
        forge(ring, target, code, body, (111, 222), dest=dest, reply_to=THIRD)
    ring.run(3000)
    assert sent_to(ring, THIRD) == []


def test_a_stranger_s_ping_is_answered_no_larger_than_it_came(topology):
    ring = build(3, topology=topology)
    node = ring.live()[0]
    ping = forge(ring, node, Code.PING, EMPTY, (4242,))
    answers = [data for data, to in node.datagrams_to_send() + [(d, t) for _, d, _, t in ring.wire]
               if to == STRANGER]
    assert answers and all(len(a) <= len(ping) for a in answers)


def test_a_far_future_storage_time_is_refused_and_the_owner_writes_again(topology):
    ring = build(4, topology=topology)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    future = put(ring, client, "sip:bob@example.org", b"squatter", ring.live()[0], t=2**53)
    assert future.error is not None and future.error.code == ErrorCode.DATA_TOO_NEW
    assert put(ring, client, "sip:bob@example.org", b"bob", ring.live()[1], t=ring.now_ms).error is None
    assert get(ring, client, "sip:bob@example.org", ring.live()[2]).answer.entries[0].value == b"bob"


def test_a_registration_is_stored_no_longer_than_the_registrar_grants():
    ring = build(3)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    rid = id_from_name("sip:bob@example.org")
    handle = client.store(rid, Kind.SIP_REGISTRATION, DataModel.DICTIONARY,
                          [Entry(b"c", b"x", 1, 7 * 24 * 3600)], now_ms=ring.now_ms, first_hop=ring.live()[0].me.addr)
    ring.flush(client)
    ring.run(500)
    assert completed(ring, handle).error is None
    held = [n.storage.fetch(rid, Kind.SIP_REGISTRATION, now_ms=ring.now_ms) for n in ring.live()]
    assert {e.lifetime_s for ans in held for e in ans.entries} == {REGISTRATION_LIFETIME_S_MAX}


def test_an_unusable_reply_to_from_a_neighbour_is_answered_along_the_path():
    ring = build(4)
    node = ring.live()[0]
    pred = node.topology.pred
    forge(ring, node, Code.STAT, Stat(0), (777, pred.node_id), src=pred.addr, dest=(), reply_to=("", 0))
    sent = [to for _, _, _, to in ring.wire]
    assert ("", 0) not in sent and pred.addr in sent  # the answer went back the way it came


def _put(ring: Ring, client: PeerNode, key: str, via: PeerNode) -> int:
    handle = client.store(id_from_name(key), 1, DataModel.SINGLE, [Entry(None, b"v", ring.now_ms, 600)],
                          now_ms=ring.now_ms, first_hop=via.me.addr)
    ring.flush(client)
    return handle


def test_one_writer_is_refused_with_the_quota_code_and_the_others_still_store():
    ring = build(4)
    for node in ring.live():
        node.storage = Storage(writer_resources_max=20)
    greedy = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    handles = [_put(ring, greedy, f"greedy{i}", ring.live()[0]) for i in range(100)]
    ring.run(2000)
    errors = [completed(ring, h, greedy).error for h in handles]
    assert {e.code for e in errors if e is not None} == {ErrorCode.QUOTA_EXCEEDED}
    assert 20 <= sum(e is None for e in errors) < 100
    modest = ring.add(client=True, bootstrap=ring.live()[1].me.addr)
    for i in range(10):
        assert put(ring, modest, f"modest{i}", b"modest%d" % i, ring.live()[1]).error is None
        assert get(ring, modest, f"modest{i}", ring.live()[2]).answer.entries[0].value == b"modest%d" % i


def test_a_full_peer_is_left_alone_instead_of_asked_every_round():
    ring = build(4)
    full = ring.live()[0]
    full.storage = Storage(resources_max=5)
    client = ring.add(client=True, bootstrap=ring.live()[1].me.addr)
    for i in range(60):
        _put(ring, client, f"k{i}", ring.live()[1])
    ring.run(5000)
    refused = full.counters["refused.storage_full"]
    assert refused > 0
    ring.run(30_000)  # thirty maintenance rounds, well inside the back-off
    assert full.counters["refused.storage_full"] == refused


def test_copies_are_pushed_a_window_at_a_time():
    ring = build(2)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    for i in range(300):
        _put(ring, client, f"k{i}", ring.live()[0])
        ring.run(5)
    ring.run(3000)
    newcomer = ring.add(bootstrap=ring.live()[0].me.addr)  # takes a range: copies move to it
    peak = 0
    for _ in range(400):
        ring.run(1)
        peak = max(peak, sum(1 for _, data, _, to in ring.wire
                             if to == newcomer.me.addr and decode(data, OVERLAY).code is Code.STORE))
    assert 0 < peak <= REPLICA_PUSHES_IN_FLIGHT_MAX * 2  # two peers push to it, each its window
    ring.run(10_000)
    assert ring.converged()


def test_a_stat_that_outgrows_a_datagram_comes_whole_in_pages():
    ring = build(3)
    node, asker = ring.live()[0], ring.add(client=True, bootstrap=ring.live()[1].me.addr)
    for i in range(150):  # far more than one datagram holds
        node.counters[f"test.counter_{i:03d}"] = i
    parts: list[StatAns] = []
    while not parts or len(parts) < parts[-1].pages:  # the last page knows best: counters come and go
        handle = asker.stat(node.me.addr, now_ms=ring.now_ms, page=len(parts))
        ring.flush(asker)
        ring.run(100)
        answer = completed(ring, handle, asker).answer
        assert isinstance(answer, StatAns)
        parts.append(answer)
    whole = StatAns.merged(parts)
    local = node.stat_local(now_ms=ring.now_ms)
    assert len(parts) > 1 and dict(whole.counters).items() >= {f"test.counter_{i:03d}": i for i in range(150)}.items()
    assert whole.fingers == local.fingers and whole.successors == local.successors
