"""Hostile datagrams into PeerNode: only counted drops, never an exception, and it keeps serving."""

from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.core.errors import DecodeError
from peerphone.core.ids import id_from_name
from peerphone.core.limits import INGRESS_BURST, INGRESS_NETWORK_BURST
from peerphone.core.overlay import Topology
from peerphone.core.peer import PeerNode
from peerphone.core.wire import decode, encode
from peerphone.core.wire.messages import EMPTY, Code, DataModel, Dest, DestKind, Entry, Message, Store

from tests.core.test_codec import messages
from tests.ring import OVERLAY, Ring, sealed


def _overlay(topology: Topology) -> Ring:
    ring = Ring(seed=5, topology=topology)
    first = ring.add()
    for _ in range(3):
        ring.add(bootstrap=first.me.addr)
    ring.run(4000)
    return ring


RINGS = {t: _overlay(t) for t in Topology}  # every topology's peer, as the target of the same hostile input
RING = RINGS[Topology.CHORD]
VICTIM = RING.live()[1]


def _still_serves(victim: PeerNode, now_ms: int) -> None:
    before = victim.counters["sent.PING_ANS"]
    ping = Message(32, (777,), (), 1, Code.PING, EMPTY)
    victim.receive_datagram(encode(ping, OVERLAY), ("10.7.7.7", 7), now_ms=now_ms)
    assert victim.counters["sent.PING_ANS"] == before + 1
    victim.datagrams_to_send()


@settings(max_examples=1500)
@given(st.binary(max_size=1500), st.integers(0, 2**16))
def test_arbitrary_bytes_are_dropped_and_counted(data, port):
    drops = sum(v for k, v in VICTIM.counters.items() if k.startswith("drop."))
    VICTIM.receive_datagram(data, ("10.8.0.1", port), now_ms=RING.now_ms)
    VICTIM.datagrams_to_send()
    after = sum(v for k, v in VICTIM.counters.items() if k.startswith("drop."))
    try:
        decode(data, OVERLAY)
    except DecodeError:
        assert after == drops + 1  # not a message: exactly one counted drop
    RING.now_ms += 1


@settings(max_examples=900)
@given(st.sampled_from(list(Topology)), messages, st.integers(0, 2**16))
def test_well_formed_but_arbitrary_messages_never_raise(topology, msg, port):
    ring = RINGS[topology]
    victim = ring.live()[1]
    victim.receive_datagram(encode(msg, OVERLAY), ("10.8.1.1", port), now_ms=ring.now_ms)
    victim.datagrams_to_send()
    victim.events()
    ring.now_ms += 1
    victim.handle_timer(now_ms=ring.now_ms)  # whatever it started (a lookup, a proxy) runs on
    victim.datagrams_to_send()
    _still_serves(victim, ring.now_ms)


def test_garbage_is_counted_by_reason():
    ring = Ring(seed=9)
    node = ring.add()
    for data in (b"", b"\xff" * 10, b"\x90" * 1300):
        node.receive_datagram(data, ("10.0.0.9", 1), now_ms=0)
    wrong_overlay = encode(Message(32, (5,), (), 1, Code.PING, EMPTY), OVERLAY + 1)
    node.receive_datagram(wrong_overlay, ("10.0.0.9", 1), now_ms=0)
    assert node.counters["drop.oversize"] == 1
    assert node.counters["drop.malformed"] == 2
    assert node.counters["drop.overlay"] == 1
    assert node.datagrams_to_send() == []


def test_a_flood_from_one_source_is_rate_limited_but_others_are_served():
    ring = Ring(seed=9)
    node = ring.add()
    ping = encode(Message(32, (5,), (), 1, Code.PING, EMPTY), OVERLAY)
    for _ in range(INGRESS_BURST + 100):
        node.receive_datagram(ping, ("10.0.0.66", 1), now_ms=0)
    assert node.counters["drop.rate"] == 100
    node.receive_datagram(ping, ("10.0.0.67", 1), now_ms=0)
    assert node.counters["drop.rate"] == 100
    node.receive_datagram(ping, ("10.0.0.66", 1), now_ms=1000)  # tokens came back
    assert node.counters["drop.rate"] == 100


def test_a_store_with_a_wrong_data_model_is_answered_with_an_error(topology):
    ring = Ring(seed=2, topology=topology)
    node = ring.add()
    sender = ring.add(client=True, bootstrap=node.me.addr)
    rid = id_from_name("k")
    for model, key in ((DataModel.SINGLE, None), (DataModel.DICTIONARY, b"x")):
        msg = Message(32, (sender.me.node_id,), (Dest(DestKind.RESOURCE, rid),), int(model), Code.STORE,
                      sealed(Store(rid, 1, model, (Entry(key, b"v", 1, 60),), False), sender.identity))
        node.receive_datagram(encode(msg, OVERLAY), sender.me.addr, now_ms=0)
        ring.flush(node)
        ring.run(100)  # the sender answers the node's ping, then the store runs
    assert node.counters["sent.STORE_ANS"] == 1 and node.counters["sent.ERROR"] == 1


def test_many_ports_or_many_hosts_of_one_network_are_limited_as_one_but_neighbours_never():
    ring = Ring(seed=9)
    node = ring.add()
    neighbour = ring.add(bootstrap=node.me.addr)
    ring.run(2000)
    ping = encode(Message(32, (5,), (), 1, Code.PING, EMPTY), OVERLAY)
    for port in range(INGRESS_BURST + 100):  # one host, a new source port each time
        node.receive_datagram(ping, ("10.99.0.1", 1024 + port), now_ms=ring.now_ms)
    assert node.counters["drop.rate"] == 100
    for i in range(INGRESS_NETWORK_BURST):  # hosts of one /24, each under its own limit
        node.receive_datagram(ping, (f"10.99.0.{2 + i % 250}", 1), now_ms=ring.now_ms)
    allowed = INGRESS_NETWORK_BURST - INGRESS_BURST  # what the first host left of the network's burst
    assert node.counters["drop.rate"] == 100 + INGRESS_NETWORK_BURST - allowed
    from_neighbour = encode(Message(32, (neighbour.me.node_id,), (), 2, Code.PING, EMPTY), OVERLAY)
    node.receive_datagram(from_neighbour, neighbour.me.addr, now_ms=ring.now_ms)
    assert node.counters["drop.rate"] == 100 + INGRESS_NETWORK_BURST - allowed  # maintenance before strangers
