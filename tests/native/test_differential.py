"""The native routines against their pure-Python twins: same answers on random
inputs and on the edges (0, the largest id, ties, empty and full tables, 128- and
160-bit ids). Runs natively even under PEERPHONE_PURE=1."""

from hypothesis import example, given
from hypothesis import strategies as st
from peerphone._accel import pure
from peerphone._accel._native import ffi, lib
from peerphone.core.overlay.kademlia import KBuckets
from peerphone.core.wire.messages import NodeInfo

WIDTHS = st.sampled_from([16, 20])


def native_xor_closest(ids, width, target, k):
    packed = b"".join(i.to_bytes(width, "big") for i in ids)
    out = ffi.new("uint32_t[]", max(1, k))
    n = lib.pp_xor_closest(packed, len(ids), width, target.to_bytes(width, "big"), k, out)
    return list(out[0:n])


def id_lists(width):
    top = 2 ** (8 * width) - 1
    one = st.one_of(st.integers(0, top), st.sampled_from([0, 1, top, top - 1, 2 ** (8 * width - 1)]))
    return st.lists(one, max_size=300)


@given(WIDTHS.flatmap(lambda w: st.tuples(st.just(w), id_lists(w), st.integers(0, 2 ** (8 * w) - 1),
                                           st.integers(0, 300))))
@example((20, [], 0, 20))
@example((20, [0, 2**160 - 1, 5, 5], 2**160 - 1, 3))  # the edges, and a tie kept in table order
@example((16, list(range(300)), 2**128 - 1, 256))
def test_xor_closest_equals_the_twin(case):
    width, ids, target, k = case
    want = pure.xor_closest(ids, target, min(k, 256))
    assert native_xor_closest(ids, width, target, k) == want
    assert [ids[i] ^ target for i in want] == sorted(i ^ target for i in ids)[:min(k, 256)]


@given(st.integers(0, 2**160 - 1), st.lists(st.integers(0, 2**160 - 1), max_size=120, unique=True),
       st.lists(st.integers(0, 2**12), max_size=40, unique=True), st.integers(0, 2**160 - 1), st.integers(1, 30),
       st.lists(st.integers(0, 119), max_size=30))
def test_a_routing_table_answers_alike_packed_for_c_or_walked_in_python(me, far, near, target, count, removals):
    tables = [KBuckets(NodeInfo(me, ("10.0.0.1", 1)), 8, packed=packed) for packed in (True, False)]
    contacts = [i for i in far + [me ^ n for n in near] if i != me]
    for table in tables:
        for node_id in contacts:
            table.seen(NodeInfo(node_id, ("10.0.0.2", 2)))
        for index in removals:  # failures promote waiting contacts: the packed slots move
            if index < len(contacts):
                table.remove(contacts[index])
    packed, walked = ([n.node_id for n in t.closest(target, count, avoid=contacts[:2])] for t in tables)
    assert packed == walked
