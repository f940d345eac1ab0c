"""PeerNode end to end on the in-memory ring: literal times, real codec, many nodes.

Most tests here are the conformance suite: they run against every topology.
"""

import pytest
from peerphone.core.errors import LocalProtocolError
from peerphone.core.events import Left, RequestCompleted, Tunnelled
from peerphone.core.ids import RING, id_from_name
from peerphone.core.limits import (
    DATAGRAM_BYTES_MAX,
    DICT_KEY_BYTES_MAX,
    REPLICA_PUSHES_IN_FLIGHT_MAX,
    REPLICAS,
    TTL_INITIAL,
    TUNNEL_BYTES_MAX,
    VALUE_BYTES_MAX,
    VIA_ENTRIES_MAX,
)
from peerphone.core.overlay import Topology
from peerphone.core.peer import PeerNode, State
from peerphone.core.wire import decode, encode
from peerphone.core.wire.messages import (
    ARRAY_APPEND,
    Code,
    DataModel,
    Dest,
    DestKind,
    Entry,
    Error,
    FetchAns,
    Message,
    StatAns,
    Store,
    Tunnel,
)

from tests.ring import OVERLAY, Ring, build, sealed


def completed(ring: Ring, handle: int, node: PeerNode | None = None) -> RequestCompleted:
    """The completion of `handle` (of `node`, where several nodes made requests)."""
    found = [e for at, e in ring.events if isinstance(e, RequestCompleted) and e.handle == handle
             and (node is None or at == node.me.addr)]
    assert len(found) == 1, found
    return found[0]


def put(ring, client, key, value, via, t=1):
    h = client.store(id_from_name(key), 1, DataModel.SINGLE, [Entry(None, value, t, 600)], now_ms=ring.now_ms,
                     first_hop=via.me.addr)
    ring.flush(client)
    ring.run(500)
    return completed(ring, h, client)


def get(ring, client, key, via):
    h = client.fetch(id_from_name(key), 1, now_ms=ring.now_ms, first_hop=via.me.addr)
    ring.flush(client)
    ring.run(3000)
    return completed(ring, h, client)


def holders(ring, key):
    rid = id_from_name(key)
    return sorted(n.me.node_id for n in ring.live() if (rid, 1) in n.storage)


def test_a_value_lives_on_its_replica_set_and_is_found_from_everywhere(topology):
    """Ring: the responsible node and its two successors; Kademlia: the three XOR-closest."""
    ring = build(12, topology=topology)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    assert put(ring, client, "alice", b"a", ring.live()[3]).error is None
    ring.run(1000)
    assert holders(ring, "alice") == sorted(ring.replica_set(id_from_name("alice")))
    for via in ring.live():
        done = get(ring, client, "alice", via)
        assert done.error is None and done.answer.entries[0].value == b"a"


def test_fetch_of_a_missing_key_answers_empty_not_error(topology):
    ring = build(5, topology=topology)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    done = get(ring, client, "nobody", ring.live()[2])
    assert done.error is None and isinstance(done.answer, FetchAns) and done.answer.model is None


def test_values_survive_failure_of_two_of_their_three_holders(topology):
    ring = build(16, seed=3, topology=topology)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    keys = [f"k{i}" for i in range(40)]
    for k in keys:
        assert put(ring, client, k, k.encode(), ring.live()[hash(k) % 16]).error is None
    ring.run(1000)
    victim_ids = holders(ring, "k0")[:2]
    for node in ring.live():
        if node.me.node_id in victim_ids:
            ring.kill(node)
    ring.run(15_000)
    assert ring.converged()
    for k in keys:
        assert len(holders(ring, k)) >= REPLICAS, k  # re-replicated
        done = get(ring, client, k, ring.live()[0])
        assert done.error is None and done.answer.entries[0].value == k.encode()


def test_graceful_leave_hands_values_over(topology):
    ring = build(6, seed=11, topology=topology)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    put(ring, client, "bob", b"b", ring.live()[0])
    ring.run(1000)
    primary = next(n for n in ring.live() if n.me.node_id == ring.responsible(id_from_name("bob")))
    primary.leave(now_ms=ring.now_ms)
    ring.flush(primary)
    ring.run(2000)
    assert primary.state is State.LEFT and any(isinstance(e, Left) for a, e in ring.events if a == primary.me.addr)
    ring.kill(primary)
    ring.run(4000)
    assert ring.converged()
    assert len(holders(ring, "bob")) == REPLICAS
    assert get(ring, client, "bob", ring.live()[1]).answer.entries[0].value == b"b"


def test_a_leaving_node_hands_thousands_of_values_over_a_window_at_a_time(topology):
    ring = build(4, seed=12, topology=topology)
    leaver = ring.live()[0]
    mine = [rid for rid in (id_from_name(f"v{i}") for i in range(1600))
            if ring.responsible(rid) == leaver.me.node_id][:300]
    for rid in mine:
        leaver.storage.store(sealed(Store(rid, 1, DataModel.SINGLE, (Entry(None, b"v", 1, 600),), False),
                                    leaver.identity), now_ms=ring.now_ms)
    leaver.leave(now_ms=ring.now_ms)
    ring.flush(leaver)
    stores = [d for _, d, src, _ in ring.wire if src == leaver.me.addr and decode(d, OVERLAY).code is Code.STORE]
    assert len(stores) == REPLICA_PUSHES_IN_FLIGHT_MAX  # not 300 (or 900) at once
    ring.run(3000)
    assert leaver.state is State.LEFT
    ring.kill(leaver)
    assert all(any((rid, 1) in n.storage for n in ring.live()) for rid in mine)


def test_a_retransmitted_append_is_executed_once(topology):
    ring = build(4, topology=topology)
    rid = id_from_name("list")
    owner = next(n for n in ring.live() if n.me.node_id == ring.responsible(rid))
    sender = ring.add(client=True, bootstrap=owner.me.addr)  # answers the owner's ping: a proven sender
    body = sealed(Store(rid, 2, DataModel.ARRAY, (Entry(ARRAY_APPEND, b"m", 1, 60),), False), sender.identity)
    msg = Message(32, (sender.me.node_id,), (Dest(DestKind.RESOURCE, rid),), 42, Code.STORE, body)
    for _ in range(3):  # the same transaction three times, as retransmissions arrive
        owner.receive_datagram(encode(msg, OVERLAY), sender.me.addr, now_ms=ring.now_ms)
    ring.flush(owner)
    ring.run(1000)  # a Kademlia peer answers after its lookup
    assert owner.counters["deduplicated"] == 2
    assert owner.counters["sent.STORE_ANS"] >= 1  # a retransmission in flight is answered, or dropped
    for node in ring.live():
        if node.me.node_id in ring.replica_set(rid):
            assert len(node.storage.fetch(rid, 2, now_ms=ring.now_ms).entries) == 1


def test_stat_reports_the_nearest_neighbour(topology):
    ring = build(5, topology=topology)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    target = ring.live()[2]
    h = client.stat(target.me.addr, now_ms=ring.now_ms)
    ring.flush(client)
    ring.run(100)
    stat = completed(ring, h).answer
    assert isinstance(stat, StatAns) and stat.node_id == target.me.node_id
    assert stat.successors[0] == ring.neighbour(target)


def test_store_to_a_dead_first_hop_times_out_as_an_error(topology):
    ring = build(4, topology=topology)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    dead = ring.live()[1]
    ring.kill(dead)
    h = client.store(id_from_name("x"), 1, DataModel.SINGLE, [Entry(None, b"x", 1, 60)], now_ms=ring.now_ms,
                     first_hop=dead.me.addr)
    ring.flush(client)
    ring.run(1000)
    assert not [e for _, e in ring.events if isinstance(e, RequestCompleted)]  # still retransmitting
    ring.run(10_000)
    done = completed(ring, h)
    assert isinstance(done.error, Error) and done.error.reason == "timed out"
    assert client.counters["retransmitted"] == client.config.timing.rpc_transmissions_max - 1


def _lookup(ring, origin, target):
    h = origin.lookup(target, now_ms=ring.now_ms)
    ring.flush(origin)
    return h


def test_a_dead_next_hop_is_routed_around_before_any_probe_notices():
    ring = build(24, seed=21)
    origin = ring.live()[0]
    far = [f for f in origin.topology.distinct_fingers() if f not in origin.topology.successors]
    dead = next(n for n in ring.live() if n.me.node_id == far[-1].node_id)
    ring.kill(dead)
    target = (dead.me.node_id + 1) % 2**160  # routed through the dead finger, owned by its successor
    started = ring.now_ms
    h = _lookup(ring, origin, target)
    ring.run(origin.config.timing.routed_retransmit_first_ms - 1)  # before any end-to-end retransmission
    done = completed(ring, h)
    assert done.error is None and done.responder == ring.responsible(target)
    assert origin.counters["rerouted"] >= 1 and origin.counters["hop_timeouts"] >= 1
    assert ring.now_ms - started < origin.config.timing.routed_retransmit_first_ms


def _slow_ring() -> tuple[Ring, list[int]]:
    """Six nodes at fixed ids that converged, maintaining only every minute: nobody notices
    a change by itself within a test."""
    from peerphone.core.limits import Timing
    ring = Ring(seed=4, timing=Timing().scaled(60_000), enrolled=True)
    ids = [10**47 * k for k in (1, 3, 5, 7, 9, 11)]
    first = ring.add(ids[0])
    for i in ids[1:]:
        ring.add(i, bootstrap=first.me.addr)
        ring.run(200_000)
    assert ring.converged()
    return ring, ids


def test_a_newly_joined_node_takes_its_range_even_before_its_predecessor_knows_it():
    ring, ids = _slow_ring()
    first = next(n for n in ring.live() if n.me.node_id == ids[0])
    p = next(n for n in ring.live() if n.me.node_id == ids[2])
    joiner = ring.add(ids[2] + 10**46, bootstrap=first.me.addr)  # between p and its successor
    ring.run(100)  # joined and told its successor; p has not stabilised
    assert p.topology.succ.node_id == ids[3]
    target = ids[2] + 10**45  # in the joiner's range
    h = _lookup(ring, p, target)
    ring.run(100)
    assert completed(ring, h).responder == joiner.me.node_id


def test_a_dead_node_s_range_is_answered_by_its_successor_before_anybody_has_noticed_the_death():
    """P judges its successor D responsible; D is dead, so P hands the request to S, whose
    predecessor is still D: S sends it one step back to D, finds D silent too, and answers."""
    ring, ids = _slow_ring()
    p, d, s = (next(n for n in ring.live() if n.me.node_id == i) for i in ids[2:5])
    ring.kill(d)
    assert p.topology.succ.node_id == d.me.node_id and s.topology.pred.node_id == d.me.node_id
    h = _lookup(ring, p, ids[3] - 10**45)  # in D's range
    ring.run(p.config.timing.routed_retransmit_first_ms - 1)  # before any end-to-end retransmission
    done = completed(ring, h)
    assert done.error is None and done.responder == s.me.node_id


def test_every_lookup_is_answered_by_the_responsible_node(topology):
    ring = build(20, seed=13, topology=topology)
    origin = ring.live()[4]
    handles = {}
    for k in range(40):
        target = ring.rng.randrange(2**160)
        handles[_lookup(ring, origin, target)] = target
    ring.run(1000)
    for handle, target in handles.items():
        done = completed(ring, handle)
        assert done.error is None and done.responder == ring.responsible(target)


def test_one_hop_lookups_take_one_hop_and_learn_newcomers():
    ring = build(30, seed=17, topology=Topology.ONEHOP)
    newcomer = ring.add(bootstrap=ring.live()[0].me.addr)
    ring.run(3000)
    assert ring.converged()
    for node in ring.live():
        assert len(node.topology.members()) == len(ring.live()) - 1  # everybody knows everybody
    origin = ring.live()[7]
    h = _lookup(ring, origin, newcomer.me.node_id)
    ring.run(100)
    done = completed(ring, h)
    assert done.responder == newcomer.me.node_id and done.hops == 1
    ring.kill(newcomer)
    ring.run(5000)
    assert all(newcomer.me.node_id not in {m.node_id for m in n.topology.members()} for n in ring.live())


def test_a_store_at_the_size_limit_survives_a_long_path(topology):
    """The origin accepts only what every peer on the way accepts: the largest store
    it takes is never dropped (oversize, out of bounds) further on."""
    ring = build(32, seed=23, topology=topology)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    hops = []
    for i, via in enumerate(ring.live()[:8]):
        for size in range(DATAGRAM_BYTES_MAX, 0, -1):  # the largest value the origin takes
            try:
                h = client.store(id_from_name(f"big{i}"), 3, DataModel.DICTIONARY,
                                 [Entry(b"k" * DICT_KEY_BYTES_MAX, b"v" * size, 1, 600)], now_ms=ring.now_ms,
                                 first_hop=via.me.addr)
                break
            except LocalProtocolError:
                continue
        assert size == VALUE_BYTES_MAX
        ring.flush(client)
        ring.run(2000)
        done = completed(ring, h)
        assert done.error is None, done.error
        hops.append(done.hops)
    drops = {k for n in ring.live() for k in n.counters if k.startswith("drop.")}
    assert drops <= {"drop.unexpected_ack"}, drops  # a late hop ack is harmless; no size drop
    if topology is Topology.CHORD:
        assert max(hops) >= 3  # the path was long enough to matter


def test_a_tunnel_reaches_its_node_once_from_anywhere(topology):
    ring = build(10, topology=topology)
    nodes = ring.live()
    for origin, target in ((nodes[0], nodes[7]), (nodes[5], nodes[2]), (nodes[9], nodes[4])):
        payload = f"INVITE for {target.me.node_id:x}".encode()
        handle = origin.tunnel(target.me.node_id, payload, now_ms=ring.now_ms)
        ring.flush(origin)
        ring.run(2000)
        done = [e for addr, e in ring.events if addr == origin.me.addr and isinstance(e, RequestCompleted)
                and e.handle == handle]
        assert len(done) == 1 and done[0].error is None and done[0].responder == target.me.node_id
        got = [e for addr, e in ring.events if isinstance(e, Tunnelled) and e.payload == payload]
        assert got == [Tunnelled(origin.me.node_id, payload)]
        assert all(addr == target.me.addr for addr, e in ring.events if isinstance(e, Tunnelled)
                   and e.payload == payload)


def test_a_tunnel_beyond_its_bound_is_refused_at_the_origin():
    ring = build(3)
    with pytest.raises(LocalProtocolError):
        ring.live()[0].tunnel(ring.live()[1].me.node_id, b"x" * (TUNNEL_BYTES_MAX + 1), now_ms=ring.now_ms)


def test_a_tunnel_at_its_bound_is_sent_and_fits_a_datagram_with_a_full_via_list():
    ring = build(3)
    origin = ring.live()[0]
    origin.tunnel(ring.live()[1].me.node_id, b"x" * TUNNEL_BYTES_MAX, now_ms=ring.now_ms)  # no LocalProtocolError
    widest = Message(TTL_INITIAL, (RING - 1,) * VIA_ENTRIES_MAX, (Dest(DestKind.NODE, RING - 1),), 2**64 - 1,
                     Code.TUNNEL, Tunnel(b"x" * TUNNEL_BYTES_MAX, RING - 1), None, ("0" * 39, 65535), True)
    assert len(encode(widest, OVERLAY)) <= DATAGRAM_BYTES_MAX


def test_the_responsible_node_answers_a_store_before_it_pushes_the_copies(topology):
    """The writer waits for the answer, not for the replicas: each copy (encrypted over a link,
    then checked by its replica) sent first would only delay it."""
    ring = build(8, topology=topology)
    client = ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    responsible = next(n for n in ring.live() if n.me.node_id == ring.responsible(id_from_name("carol")))
    sent_in_order: list[Code] = []
    outgoing = responsible.datagrams_to_send

    def watched():
        out = outgoing()
        sent_in_order.extend(decode(data, OVERLAY).code for data, _ in out)
        return out

    responsible.datagrams_to_send = watched
    assert put(ring, client, "carol", b"c", responsible).error is None
    assert Code.STORE_ANS in sent_in_order and Code.STORE in sent_in_order
    assert sent_in_order.index(Code.STORE_ANS) < sent_in_order.index(Code.STORE)


@pytest.mark.parametrize("topology", [Topology.CHORD, Topology.ONEHOP])
def test_a_node_that_leaves_and_joins_again_under_its_id_gets_its_range_back(topology):
    """A handset that turns client and later peer again comes back with empty storage. Its
    successor once gave it these values; that record must not outlive the node's leaving."""
    ring = Ring(seed=5, topology=topology, enrolled=True)
    step = RING // 8
    first = ring.add(node_id=2 * step)
    for i in (4, 6, 7):
        ring.add(node_id=i * step, bootstrap=first.me.addr)
        ring.run(40)
    ring.run(5000)
    resource = step + 5  # first's, until a node joins at 1.5 steps
    client = ring.add(client=True, bootstrap=first.me.addr)
    h = client.store(resource, 1, DataModel.SINGLE, [Entry(None, b"v", 1, 600)], now_ms=ring.now_ms)
    ring.flush(client)
    ring.run(1000)
    assert completed(ring, h, client).error is None

    def handset() -> PeerNode:
        node = ring.add(node_id=step + step // 2, bootstrap=first.me.addr)
        ring.run(8000)  # joined, notified its successor, given its range
        assert (resource, 1) in node.storage
        return node

    before = handset()
    before.leave(now_ms=ring.now_ms)
    ring.flush(before)
    ring.run(3000)
    assert before.state is State.LEFT
    ring.kill(before)
    ring.run(5000)
    handset()  # a new node with the same id, nothing stored
