"""Kademlia's k-buckets and iterative lookup against brute force, and the simulator's
XOR oracle the conformance suite relies on."""

from hypothesis import given
from hypothesis import strategies as st
from peerphone.core.ids import ID_MAX
from peerphone.core.overlay.kademlia import KBuckets, Lookup, bucket_of
from peerphone.core.wire.messages import NodeInfo
from peerphone.sim.engine import Oracle

ids = st.integers(0, ID_MAX)


def node(node_id: int) -> NodeInfo:
    return NodeInfo(node_id, ("10.0.0.1", node_id % 65536))


def test_a_full_bucket_keeps_its_old_members_and_promotes_a_waiting_contact_when_one_fails():
    me = node(0)
    table = KBuckets(me, k=2)
    bucket = [node(2**100 + i) for i in range(4)]  # one bucket: same bit length of XOR distance
    assert len({bucket_of(0, n.node_id) for n in bucket}) == 1
    assert table.seen(bucket[0]) == (True, None)
    assert table.seen(bucket[1]) == (True, None)
    assert table.seen(bucket[2]) == (False, bucket[0])  # waits; the oldest is to be pinged
    assert table.seen(bucket[3]) == (False, bucket[0])
    assert bucket[2].node_id not in table
    table.seen(bucket[0])  # it answered the ping: now the most recently seen
    assert table.seen(bucket[2]) == (False, bucket[1])
    assert table.remove(bucket[1].node_id) == bucket[2]  # the freshest waiting contact takes its place
    assert {n.node_id for n in table.contacts()} == {bucket[0].node_id, bucket[2].node_id}
    assert table.remove(bucket[0].node_id) == bucket[3]
    assert table.remove(bucket[2].node_id) is None  # nobody waiting any more
    assert [n.node_id for n in table.contacts()] == [bucket[3].node_id]


near = st.integers(0, 2**12)  # XOR offsets that land in our low buckets, where the bucket order is subtle


@given(ids, st.lists(ids, max_size=40, unique=True), st.lists(near, max_size=60, unique=True), near,
       st.integers(1, 25))
def test_closest_is_the_brute_force_xor_order(me, far, close, offset, count):
    table = KBuckets(node(me), k=20)
    for other in far + [me ^ c for c in close]:
        table.seen(node(other))
    target = me ^ offset
    known = [n.node_id for n in table.contacts()]
    assert me not in known
    assert [n.node_id for n in table.closest(target, count)] == sorted(known, key=lambda i: i ^ target)[:count]


@given(ids, st.integers(0, 2**64))
def test_a_refresh_target_falls_in_its_bucket(me, bits):
    table = KBuckets(node(me))
    for index in (0, 1, 7, 80, 159):
        assert bucket_of(me, table.id_in_bucket(index, bits)) == index


@given(st.lists(ids, min_size=30, max_size=120, unique=True), ids, st.randoms(use_true_random=False))
def test_an_iterative_lookup_settles_on_the_true_closest(everyone, target, rnd):
    """Every node's table is built the Kademlia way (k per bucket); a lookup from any
    node, asking only what each node's own table answers, ends at the k closest."""
    tables = {}
    for me in everyone:
        table = KBuckets(node(me), k=4)
        for other in rnd.sample(everyone, len(everyone)):
            table.seen(node(other))
        tables[me] = table
    origin = rnd.choice(everyone)
    lookup = Lookup(target, k=4, alpha=3, settle=4)
    lookup.add(tables[origin].closest(target, 4), 1)
    lookup.include(node(origin))
    rounds = 0
    while not lookup.done:
        asked = lookup.to_ask()
        assert asked, "not done, yet nobody left to ask"
        for n in asked:
            lookup.answered(n.node_id, tables[n.node_id].closest(target, 4))
        rounds += 1
        assert rounds < 60
    want = sorted(everyone, key=lambda i: i ^ target)[:4]
    assert [n.node_id for n in lookup.closest(4)] == want


def test_a_lookup_passes_over_nodes_that_fail():
    target = 0
    lookup = Lookup(target, k=3, alpha=2, settle=1)
    lookup.add([node(5), node(9), node(40)], 1)
    first = lookup.to_ask()
    assert [n.node_id for n in first] == [5, 9]
    lookup.failed(5)
    lookup.answered(9, [node(1)])
    assert not lookup.done
    assert [n.node_id for n in lookup.to_ask()] == [1, 40]
    lookup.answered(1)
    assert lookup.done and [n.node_id for n in lookup.closest(2)] == [1, 9]
    assert lookup.depth(1) == 2


@given(st.lists(ids, min_size=2, max_size=60, unique=True), ids)
def test_the_oracle_finds_the_xor_closest_with_and_without_a_skipped_id(everyone, target):
    oracle = Oracle(sorted(everyone))
    ordered = sorted(everyone, key=lambda i: i ^ target)
    assert oracle.xor_closest(target) == ordered[0]
    assert oracle.xor_closest(target, skip=ordered[0]) == ordered[1]
