"""Chord's tables against a sorted-ring oracle (STYLE.md habit 11)."""

from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.core.ids import ID_BITS, ID_MAX, RING, in_open
from peerphone.core.overlay.chord import Chord
from peerphone.core.wire.messages import NodeInfo

from tests.ring import Ring

ids = st.integers(0, ID_MAX)


def node(i: int) -> NodeInfo:
    return NodeInfo(i, ("127.0.0.1", 1 + i % 60000))


def oracle_successor(ring: list[int], target: int) -> int:
    return min(ring, key=lambda n: (n - target) % RING)


def filled(me: int, others: list[int]) -> Chord:
    """A Chord whose fingers and successors are what the oracle says they should be."""
    chord = Chord(node(me))
    ring = sorted({me, *others})
    index = 0
    while True:
        start = chord.finger_start(index)
        index = chord.set_finger(index, node(oracle_successor(ring, start)))
        if index == 0:
            break
    clockwise = sorted((n for n in ring if n != me), key=lambda n: (n - me) % RING)
    if clockwise:
        chord.adopt_successors(node(clockwise[0]), [node(n) for n in clockwise[1:]])
    return chord


@given(ids, st.lists(ids, min_size=1, max_size=40, unique=True))
def test_fingers_match_the_oracle(me, others):
    others = [o for o in others if o != me] or [(me + 1) % RING]
    chord = filled(me, others)
    ring = sorted({me, *others})
    for i in range(ID_BITS):
        want = oracle_successor(ring, chord.finger_start(i))
        got = chord.fingers[i].node_id if chord.fingers[i] else me
        assert got == want


@given(ids, st.lists(ids, min_size=1, max_size=40, unique=True), ids)
def test_closest_preceding_matches_brute_force(me, others, target):
    others = [o for o in others if o != me] or [(me + 1) % RING]
    chord = filled(me, others)
    known = {f.node_id for f in chord.fingers if f} | {s.node_id for s in chord.successors}
    candidates = [n for n in known if in_open(n, me, target)]
    expected = max(candidates, key=lambda n: (n - me) % RING) if candidates else None
    got = chord.closest_preceding(target)
    assert (got.node_id if got else None) == expected


@given(ids, st.lists(ids, max_size=20, unique=True))
def test_successor_list_is_clockwise_and_never_laps(me, theirs):
    chord = Chord(node(me), successors_kept=8)
    listed = [node(t) for t in theirs if t != me]
    if not listed:
        return
    chord.adopt_successors(listed[0], listed[1:])
    offsets = [(s.node_id - me) % RING for s in chord.successors]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets) and 0 not in offsets
    assert len(chord.successors) <= 8


@given(ids, st.lists(ids, min_size=3, max_size=20, unique=True), st.data())
def test_removing_a_node_removes_it_everywhere(me, others, data):
    others = [o for o in others if o != me]
    if len(others) < 2:
        return
    chord = filled(me, others)
    victim = data.draw(st.sampled_from(others))
    chord.remove(victim)
    assert all(f is None or f.node_id != victim for f in chord.fingers)
    assert all(s.node_id != victim for s in chord.successors)
    assert chord.address_of(victim) is None


@settings(max_examples=8)
@given(st.lists(ids, min_size=2, max_size=24, unique=True), st.integers(0, 2**32))
def test_a_real_ring_of_peer_nodes_converges_to_the_oracle(node_ids, seed):
    ring = Ring(seed=seed, enrolled=True)
    first = ring.add(node_ids[0])
    for i in node_ids[1:]:
        ring.add(i, bootstrap=first.me.addr)
        ring.run(30)
    ring.run(6000)
    assert ring.converged()
    ordered = sorted(node_ids)
    for peer in ring.live():
        expected = [ordered[(ordered.index(peer.me.node_id) + k) % len(ordered)] for k in range(1, len(ordered))]
        assert [s.node_id for s in peer.topology.successors] == expected[:8]
        for i in range(ID_BITS):
            got = peer.topology.fingers[i].node_id if peer.topology.fingers[i] else peer.me.node_id
            assert got == oracle_successor(ordered, peer.topology.finger_start(i))


@given(ids, st.lists(ids, min_size=1, max_size=40, unique=True), ids, st.data())
def test_one_hop_sends_every_target_straight_to_its_owner(me, others, target, data):
    from peerphone.core.overlay.onehop import OneHop
    others = [o for o in others if o != me]
    if not others:
        return
    one_hop = OneHop(node(me), 8)
    one_hop.learn(node(o) for o in others)
    ring = sorted({me, *others})
    owner = oracle_successor(ring, target)
    hop = one_hop.next_hop(target)
    assert (hop[0].node_id if hop else me) == owner
    avoided = data.draw(st.sampled_from(others))
    hop = one_hop.next_hop(target, frozenset({avoided}))
    without = sorted(set(ring) - {avoided})
    assert (hop[0].node_id if hop else me) == oracle_successor(without, target)
