"""The codec: round trips, and every kind of hostile input ends as one DecodeError."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.core.errors import DecodeError
from peerphone.core.ids import ID_MAX
from peerphone.core.limits import (
    CERTIFICATE_BYTES_MAX,
    DATAGRAM_BYTES_MAX,
    PROOF_PADDING_BYTES,
    PROTOCOL_VERSION,
    TUNNEL_BYTES_MAX,
    VALUE_BYTES_MAX,
)
from peerphone.core.wire import check_body, decode, encode
from peerphone.core.wire.messages import (
    EMPTY,
    Announce,
    AttachAns,
    Closest,
    ClosestAns,
    Code,
    DataModel,
    Dest,
    DestKind,
    Entry,
    Error,
    Fetch,
    FetchAns,
    FindAns,
    JoinAns,
    Leave,
    Members,
    MembersAns,
    Message,
    NodeInfo,
    Proof,
    Prove,
    Seal,
    Stat,
    StatAns,
    Store,
    StoreAns,
    Tunnel,
    UpdateAns,
)

OVERLAY = 0xABCD
ids = st.integers(0, ID_MAX)
nodes = st.builds(NodeInfo, ids, st.tuples(st.sampled_from(["127.0.0.1", "10.1.2.3", "::1"]),
                                           st.integers(0, 65535)))
node_lists = st.lists(nodes, max_size=4).map(tuple)
small_bytes = st.binary(max_size=40)


seals = st.builds(Seal, st.binary(min_size=32, max_size=32), st.integers(0, 3600), st.binary(min_size=64, max_size=64))


def entries(model):
    key = {DataModel.SINGLE: st.none(), DataModel.ARRAY: st.integers(0, 2**32 - 1),
           DataModel.DICTIONARY: st.binary(max_size=16)}[model]
    return st.lists(st.builds(Entry, key, small_bytes, st.integers(0, 2**40), st.integers(0, 3600), st.none() | seals),
                    max_size=3).map(tuple)


stores = st.sampled_from(list(DataModel)).flatmap(
    lambda m: st.builds(Store, ids, st.integers(0, 2**32 - 1), st.just(m), entries(m), st.booleans()))
fetch_answers = st.one_of(st.just(FetchAns(None, ())), st.sampled_from(list(DataModel)).flatmap(
    lambda m: st.builds(FetchAns, st.just(m), entries(m))))
BODIES = {
    Code.PING: st.just(EMPTY), Code.PING_ANS: st.just(EMPTY), Code.JOIN: st.just(EMPTY),
    Code.JOIN_ANS: st.builds(JoinAns, nodes, st.none() | nodes, node_lists),
    Code.LEAVE: st.builds(Leave, st.none() | nodes, node_lists), Code.LEAVE_ANS: st.just(EMPTY),
    Code.UPDATE: st.just(EMPTY), Code.UPDATE_ANS: st.builds(UpdateAns, st.none() | nodes, node_lists),
    Code.FIND: st.just(EMPTY), Code.FIND_ANS: st.builds(FindAns, nodes),
    Code.STORE: stores, Code.STORE_ANS: st.builds(StoreAns, st.integers(0, 64)),
    Code.FETCH: st.builds(Fetch, ids, st.integers(0, 2**32 - 1)), Code.FETCH_ANS: fetch_answers,
    Code.STAT: st.builds(Stat, st.integers(0, 0xFFFF)),
    Code.STAT_ANS: st.builds(StatAns, ids, st.none() | ids, st.lists(ids, max_size=4).map(tuple),
                             st.lists(ids, max_size=4).map(tuple), st.integers(0, 10**6), st.integers(0, 10**6),
                             st.lists(st.tuples(st.text(max_size=10), st.integers(0, 10**9)), max_size=4).map(tuple),
                             st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    Code.HOP_ACK: st.just(EMPTY),
    Code.ANNOUNCE: st.builds(Announce, node_lists, st.lists(ids, max_size=4).map(tuple)),
    Code.ANNOUNCE_ANS: st.just(EMPTY),
    Code.MEMBERS: st.builds(Members, st.integers(0, 0xFFFF)),
    Code.MEMBERS_ANS: st.builds(MembersAns, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), node_lists),
    Code.CLOSEST: st.builds(Closest, ids),
    Code.CLOSEST_ANS: st.builds(ClosestAns, node_lists),
    Code.TUNNEL: st.builds(Tunnel, st.binary(max_size=TUNNEL_BYTES_MAX), st.none() | ids),
    Code.TUNNEL_ANS: st.just(EMPTY),
    Code.ATTACH: st.just(EMPTY),
    Code.ATTACH_ANS: st.builds(AttachAns, st.integers(0, 3600), node_lists),
    Code.REACH: st.just(EMPTY),
    Code.REACH_ANS: st.just(EMPTY),
    Code.REACH_BACK: st.just(EMPTY),
    Code.PROVE: st.builds(Prove, st.binary(max_size=PROOF_PADDING_BYTES)),
    Code.PROVE_ANS: st.builds(Proof, st.binary(max_size=CERTIFICATE_BYTES_MAX), st.binary(max_size=64)),
    Code.ERROR: st.builds(Error, st.integers(0, 0xFFFF), st.text(max_size=40)),
}
messages = st.sampled_from(list(Code)).flatmap(lambda code: st.builds(
    Message,
    ttl=st.integers(0, 32),
    via=st.lists(ids, max_size=5).map(tuple),
    dest=st.lists(st.builds(Dest, st.sampled_from(list(DestKind)), ids), max_size=3).map(tuple),
    txid=st.integers(0, 2**64 - 1),
    code=st.just(code),
    body=BODIES[code],
    signature=st.none() | st.binary(max_size=64),
    reply_to=st.none() | st.tuples(st.sampled_from(["", "127.0.0.1"]), st.integers(0, 65535)),
    hop_ack=st.booleans(),
))


def sample() -> Message:
    return Message(32, (1, 2), (Dest(DestKind.RESOURCE, 3),), 99, Code.FETCH, Fetch(3, 1))


@given(messages)
def test_every_message_round_trips(msg):
    assert decode(encode(msg, OVERLAY), OVERLAY) == msg


@settings(max_examples=2000)
@given(st.binary(max_size=1300))
def test_arbitrary_bytes_only_ever_raise_decode_error(data):
    try:
        decode(data, OVERLAY)
    except DecodeError as e:
        assert e.reason
    # a valid message from random bytes is possible in principle, and fine


@settings(max_examples=1000)
@given(messages, st.data())
def test_mutated_messages_only_ever_raise_decode_error(msg, data):
    raw = bytearray(encode(msg, OVERLAY))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(raw), OVERLAY)
    except DecodeError:
        pass


def _reason(data: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        decode(data, OVERLAY)
    return info.value.reason


def test_wrong_overlay_and_version_are_named():
    raw = encode(sample(), OVERLAY)
    assert _reason(encode(sample(), OVERLAY + 1)) == "overlay"
    envelope = msgpack.unpackb(raw)
    envelope[0] = PROTOCOL_VERSION + 1
    assert _reason(msgpack.packb(envelope)) == "version"


def test_truncated_trailing_oversized_and_nested_input():
    raw = encode(sample(), OVERLAY)
    for cut in range(len(raw)):
        _reason(raw[:cut])
    assert _reason(raw + b"\x00") == "malformed"
    assert _reason(b"\x90" * (DATAGRAM_BYTES_MAX + 1)) == "oversize"
    assert _reason(b"\x91" * 1100 + b"\x90") in {"malformed", "envelope"}  # 1,100 levels deep


def test_field_type_checks():
    envelope = msgpack.unpackb(encode(sample(), OVERLAY))
    bad_variants = []
    for index, bad in [(2, -1), (2, 33), (3, [b"short"]), (5, -1), (5, "txid"), (6, 3), (7, [b"x" * 19, 1]),
                       (2, True), (8, "not bytes")]:
        variant = list(envelope)
        variant[index] = bad
        bad_variants.append(msgpack.packb(variant, use_bin_type=True))
    for raw in bad_variants:
        assert _reason(raw) in {"field", "code"}


def test_a_map_where_an_array_belongs_is_rejected():
    assert _reason(msgpack.packb({"a": 1})) == "malformed"


@given(messages)
def test_check_body_accepts_every_body_the_decoder_accepts(msg):
    check_body(msg.code, msg.body)


@pytest.mark.parametrize("body", [Fetch(ID_MAX + 1, 1), Fetch(1, 2**32), Store(1, 1, DataModel.SINGLE,
                                  (Entry(None, b"v" * (VALUE_BYTES_MAX + 1), 1, 60),), False)])
def test_check_body_refuses_what_a_peer_would_drop(body):
    with pytest.raises(DecodeError):
        check_body(Code.FETCH if isinstance(body, Fetch) else Code.STORE, body)
