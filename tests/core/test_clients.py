"""Attached clients (issue 14) on the in-memory ring, once per topology: a client attaches to
a peer, keeps the attachment alive, is reached through that peer only, is forgotten when it
goes silent, and attaches to another peer when its own dies."""

from dataclasses import replace

from peerphone.core.events import Attached, JoinFailed, RequestCompleted, Tunnelled
from peerphone.core.ids import RING
from peerphone.core.limits import CLIENT_SILENCE_KEEPALIVES, REACH_WAIT_MS
from peerphone.core.peer import PeerNode, State, make_peer
from peerphone.core.reachability import Reachability
from peerphone.core.usages import Kind
from peerphone.core.wire import encode
from peerphone.core.wire.messages import EMPTY, Code, Dest, DestKind, Message, Tunnel

from tests.ring import OVERLAY, TIMING, Ring, build

KEEPALIVE_MS = Ring().timing.client_keepalive_ms
CHECK_MS = 20_000  # the reach test's period, shortened


def attached_client(ring: Ring, via: PeerNode) -> PeerNode:
    client = ring.add(attach=True, bootstrap=via.me.addr)
    ring.run(1000)
    assert client.state is State.JOINED and client.admitting_peer is not None
    return client


def tunnel_to(ring: Ring, origin: PeerNode, client: PeerNode, payload: bytes) -> RequestCompleted:
    peer = client.admitting_peer
    assert peer is not None
    handle = origin.tunnel(client.me.node_id, payload, now_ms=ring.now_ms, via=peer.node_id)
    ring.flush(origin)
    ring.run(3000)
    [done] = [e for at, e in ring.events if at == origin.me.addr and isinstance(e, RequestCompleted)
              and e.handle == handle]
    return done


def test_a_client_attaches_to_a_peer_and_is_reached_through_it_from_anywhere(topology):
    ring = build(8, topology=topology)
    peers = ring.live()
    client = attached_client(ring, peers[2])
    assert client.admitting_peer == peers[2].me
    assert [e for at, e in ring.events if at == client.me.addr and isinstance(e, Attached)] == [
        Attached(peers[2].me.node_id, peers[2].me.addr)]
    assert dict(peers[2].stat_local(now_ms=ring.now_ms).counters)["clients"] == 1
    for origin in (peers[0], peers[5], peers[2]):
        payload = f"INVITE from {origin.me.node_id:x}".encode()
        done = tunnel_to(ring, origin, client, payload)
        assert done.error is None and done.responder == client.me.node_id
        assert [e for at, e in ring.events if isinstance(e, Tunnelled) and e.payload == payload] == [
            Tunnelled(origin.me.node_id, payload)]
    for peer in peers:  # it routes nothing: no peer has it in its tables
        stat = peer.stat_local(now_ms=ring.now_ms)
        assert client.me.node_id not in (stat.pred, *stat.successors, *stat.fingers)


def test_a_client_reached_through_its_peer_says_how_to_reach_it_back(topology):
    """Client to client: the answer to a client's tunnel (a 180 to its INVITE) can only go
    through that client's own peer, which the Tunnel names; routed by id, it was lost."""
    ring = build(8, topology=topology)
    peers = ring.live()
    caller, callee = attached_client(ring, peers[1]), attached_client(ring, peers[6])
    assert tunnel_to(ring, caller, callee, b"INVITE").error is None
    [invite] = [e for at, e in ring.events if isinstance(e, Tunnelled) and e.payload == b"INVITE"]
    assert invite == Tunnelled(caller.me.node_id, b"INVITE", peers[1].me.node_id)
    handle = callee.tunnel(invite.origin, b"180 Ringing", now_ms=ring.now_ms, via=invite.via)
    ring.flush(callee)
    ring.run(3000)
    [done] = [e for at, e in ring.events if at == callee.me.addr and isinstance(e, RequestCompleted)
              and e.handle == handle]
    assert done.error is None and done.responder == caller.me.node_id
    assert [at for at, e in ring.events if isinstance(e, Tunnelled) and e.payload == b"180 Ringing"] == [
        caller.me.addr]


def test_a_peer_that_became_a_client_is_dropped_by_whoever_finds_it_silent_on_a_route():
    """A handset turns client under its id and address (as UdpDriver.change_role does). Its
    leave told its neighbours, but tables elsewhere still list it until their maintenance
    comes round (at 10,000 nodes, many minutes for a Chord finger). A hop into it is not
    acknowledged (a client routes nothing), and the probe that follows used to be answered
    alive, so the peer kept it and routed into it again: one fetch met three such nodes in a
    row, four times over. Now the client answers the probe that it routes nothing."""
    ring = build(12)
    peers = ring.live()
    handset = peers[5]
    handset.leave(now_ms=ring.now_ms)
    ring.flush(handset)
    while handset.state is not State.LEFT:
        ring.run(10)
    config = replace(handset.config, client=True, attach=True)
    client = make_peer(handset.identity, handset.me.addr, config, rng=ring.rng, entropy=ring.rng.randbytes,
                       now_ms=ring.now_ms)
    ring.nodes[handset.me.addr] = client
    client.join([peers[0].me.addr], now_ms=ring.now_ms)
    ring.flush(client)
    others = [p for p in peers if p is not handset]
    before = {p.me.node_id: p.counters["hop_timeouts"] for p in others}
    past_it = (client.me.node_id + 1) % RING  # a key routed toward it by whoever still lists it
    for peer in others:
        peer.fetch(past_it, Kind.BLOB, now_ms=ring.now_ms)
        ring.flush(peer)
    ring.run(ring.timing.hop_ack_timeout_ms + 10)  # the silent hop, the probe and its answer; no maintenance round
    met_it = [p for p in others if p.counters["hop_timeouts"] > before[p.me.node_id]]
    assert met_it
    assert [p.me.node_id for p in met_it if client.me.node_id in _tables(p)] == []
    assert client.counters["sent.ERROR"] >= len(met_it)  # "a client routes nothing", to each probe


def _tables(peer: PeerNode) -> set[int]:
    stat = peer.stat_local(now_ms=0)
    return {stat.pred, *stat.successors, *stat.fingers} - {None}


def test_a_client_sends_one_keepalive_a_period_and_its_peer_keeps_it(topology):
    ring = build(5, topology=topology)
    peer = ring.live()[1]
    client = attached_client(ring, peer)
    sent_before = sum(v for k, v in client.counters.items() if k.startswith("sent."))
    periods = 10
    ring.run(periods * KEEPALIVE_MS)
    sent = sum(v for k, v in client.counters.items() if k.startswith("sent.")) - sent_before
    assert periods - 1 <= client.counters["sent.ATTACH"] - 1 <= periods + 1
    assert sent <= periods + 2, client.counters  # keepalives, and nothing else (ping answers aside)
    assert tunnel_to(ring, ring.live()[3], client, b"still there").error is None


def test_a_silent_client_is_forgotten_and_a_tunnel_to_it_fails_fast(topology):
    ring = build(5, topology=topology)
    peer, origin = ring.live()[1], ring.live()[3]
    client = attached_client(ring, peer)
    ring.kill(client)
    ring.run((CLIENT_SILENCE_KEEPALIVES + 1) * KEEPALIVE_MS)
    assert dict(peer.stat_local(now_ms=ring.now_ms).counters)["clients"] == 0
    done = tunnel_to(ring, origin, client, b"anyone?")
    assert done.error is not None and "no such client" in done.error.reason


def test_when_its_peer_dies_a_client_attaches_to_another_within_a_keepalive(topology):
    ring = build(8, topology=topology)
    first = ring.live()[4]
    client = attached_client(ring, first)
    ring.kill(first)
    ring.run(KEEPALIVE_MS + 10_000)  # the next keepalive, its retransmissions, then an alternate
    now = client.admitting_peer
    assert now is not None and now.node_id != first.me.node_id
    moves = [e for at, e in ring.events if at == client.me.addr and isinstance(e, Attached)]
    assert [m.peer_id for m in moves] == [first.me.node_id, now.node_id]
    origin = next(p for p in ring.live() if p.me.node_id != now.node_id)
    assert tunnel_to(ring, origin, client, b"found you").error is None


def test_a_client_takes_nothing_but_from_its_own_peer(topology):
    ring = build(4, topology=topology)
    peer, stranger = ring.live()[0], ring.live()[2]
    client = attached_client(ring, peer)
    forged = Message(8, (stranger.me.node_id,), (Dest(DestKind.NODE, client.me.node_id),), 77, Code.TUNNEL,
                     Tunnel(b"INVITE, straight to you"))
    client.receive_datagram(encode(forged, OVERLAY), stranger.me.addr, now_ms=ring.now_ms)
    ring.flush(client)
    assert client.counters["drop.state"] == 1
    assert not [e for at, e in ring.events if at == client.me.addr and isinstance(e, Tunnelled)]


def test_a_client_nobody_admits_fails_to_join():
    ring = build(3)
    gone = ring.live()[0]
    ring.kill(gone)
    client = ring.add(attach=True, bootstrap=gone.me.addr)
    ring.run(10_000)
    assert client.state is State.IDLE
    assert [e for at, e in ring.events if at == client.me.addr and isinstance(e, JoinFailed)]


def test_round_trips_and_losses_to_neighbours_are_measured_from_traffic_the_node_has_anyway(topology):
    ring = build(6, topology=topology)
    node = ring.live()[2]
    ring.run(5000)
    gauges = dict(node.stat_local(now_ms=ring.now_ms).counters)
    rtt_ms, loss = node.link.measured(now_ms=ring.now_ms)
    assert loss == 0.0 and gauges["link.loss_permille"] == 0
    assert rtt_ms is not None and 1 <= rtt_ms <= 10  # the ring's 1 ms each way
    client = attached_client(ring, node)
    ring.run(12 * KEEPALIVE_MS)  # the keepalives alone: 12 samples
    rtt_ms, loss = client.link.measured(now_ms=ring.now_ms)
    assert rtt_ms is not None and loss == 0.0
    ring.kill(node)
    ring.run(KEEPALIVE_MS + 10_000)
    _, loss = client.link.measured(now_ms=ring.now_ms)
    assert loss is not None and loss > 0  # its peer stopped answering (a request lost twice over: one loss)


def test_a_client_busy_with_requests_through_its_peer_sends_no_keepalive_and_stays_attached(topology):
    ring = build(5, topology=topology)
    peer = ring.live()[1]
    client = attached_client(ring, peer)
    attaches = client.counters["sent.ATTACH"]
    for _ in range(int(6 * KEEPALIVE_MS / 10_000)):  # a fetch every 10 s for six keepalive periods
        client.fetch(12345, 1, now_ms=ring.now_ms)
        ring.flush(client)
        ring.run(10_000)
    assert client.counters["sent.ATTACH"] == attaches  # the fetches did the keepalive's work
    assert dict(peer.stat_local(now_ms=ring.now_ms).counters)["clients"] == 1  # and kept it attached
    ring.run(2 * KEEPALIVE_MS)  # quiet again: keepalives again
    assert client.counters["sent.ATTACH"] - attaches in (1, 2)


def test_a_node_finds_out_whether_strangers_can_reach_it(topology):
    ring = build(5, topology=topology, timing=replace(TIMING, reach_check_ms=CHECK_MS))
    open_node, closed_node = ring.live()[1], ring.live()[3]
    ring.closed.add(closed_node.me.addr)
    ring.run(2 * CHECK_MS)  # two checks more
    assert open_node.reachable is True and closed_node.reachable is False
    assert dict(open_node.stat_local(now_ms=ring.now_ms).counters)["reachable"] == 1
    assert closed_node.counters["reach.unreachable"] >= 1  # two misses in a row, once closed
    client = attached_client(ring, open_node)
    ring.run(3 * KEEPALIVE_MS)
    assert client.reachable is True  # its peer tried from its other port
    ring.closed.add(client.me.addr)
    ring.run(CHECK_MS + 3000)
    assert client.reachable is False


def test_a_reach_test_goes_only_to_the_address_that_asked(topology):
    ring = build(3, topology=topology)
    asked = ring.live()[0]
    stranger = ring.live()[1]
    req = Message(8, (stranger.me.node_id, 12345), (), 99, Code.REACH, EMPTY)  # forwarded: whose address?
    asked.receive_datagram(encode(req, OVERLAY), stranger.me.addr, now_ms=ring.now_ms)
    assert asked.datagrams_from_other_port() == []


def test_one_lost_datagram_from_the_other_port_is_a_miss_not_unreachable():
    reach = Reachability(period_ms=600_000, retry_ms=2000)
    reach.asked(1, now_ms=0)
    reach.answered(now_ms=10)
    assert not reach.expire(now_ms=10 + REACH_WAIT_MS) and reach.reachable is None  # a miss: ask again soon
    assert reach.due_ms == 10 + REACH_WAIT_MS + 2000
    reach.asked(2, now_ms=reach.due_ms)
    assert not reach.came_back(1) and reach.came_back(2) and reach.reachable is True  # the old one is no answer
    for txid in (3, 4):
        reach.asked(txid, now_ms=0)
        reach.answered(now_ms=0)
        unreachable = reach.expire(now_ms=REACH_WAIT_MS)
    assert unreachable and reach.reachable is False


def test_a_leaving_node_stops_its_reach_tests_instead_of_spinning_on_a_due_time_in_the_past():
    ring = build(4, timing=replace(TIMING, reach_check_ms=CHECK_MS))
    node = ring.live()[1]
    node.leave(now_ms=ring.now_ms)
    later = ring.now_ms + CHECK_MS + 1  # past its next reach test's due time, whenever that was
    node.handle_timer(now_ms=later)
    deadline = node.next_deadline_ms()
    assert deadline is None or deadline > later


def test_a_stretched_peer_maintains_half_as_often():
    def maintenance_sent(node: PeerNode) -> int:
        # Stabilize: one UPDATE a round for every peer. (Probes and finger fixes depend on how
        # many distinct neighbours and fingers a node has, which differs from node to node.)
        return node.counters["sent.UPDATE"]

    ring = build(6)
    stretched, normal = ring.live()[1], ring.live()[4]
    stretched.stretch_maintenance(2)
    before = maintenance_sent(stretched), maintenance_sent(normal)
    ring.run(60 * TIMING.maintenance_interval_ms)
    ratio = (maintenance_sent(stretched) - before[0]) / (maintenance_sent(normal) - before[1])
    assert 0.3 < ratio < 0.7, ratio
    gauges = dict(stretched.stat_local(now_ms=ring.now_ms).counters)
    assert gauges["maintenance_ms"] == 2 * TIMING.maintenance_interval_ms
