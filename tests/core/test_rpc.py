"""Transactions with literal times: the retransmission schedule, timeouts and de-duplication."""

from peerphone.core.limits import HOP_WAIT_FACTOR_MAX, Timing
from peerphone.core.rpc import AnswerCache, HopTracker, RoundTrips, Transactions
from peerphone.core.wire.messages import EMPTY, Code, Message

TIMING = Timing(rpc_retransmit_first_ms=100, rpc_transmissions_max=3)


def request(txid: int) -> Message:
    return Message(32, (1,), (), txid, Code.PING, EMPTY)


def test_retransmits_with_doubling_intervals_then_times_out():
    rpc: Transactions[str] = Transactions(TIMING)
    rpc.open(request(7), "why", ("127.0.0.1", 1), now_ms=1000)
    assert rpc.next_deadline_ms() == 1100
    assert rpc.due(now_ms=1099) == ([], [])
    resend, expired = rpc.due(now_ms=1100)
    assert [p.request.txid for p in resend] == [7] and expired == []
    assert rpc.next_deadline_ms() == 1300  # 200 ms later
    resend, _ = rpc.due(now_ms=1300)
    assert resend[0].transmissions == 3 and rpc.next_deadline_ms() == 1700
    resend, expired = rpc.due(now_ms=1700)
    assert resend == [] and [p.purpose for p in expired] == ["why"]
    assert len(rpc) == 0 and rpc.next_deadline_ms() is None


def test_an_answer_closes_the_transaction_and_its_timer():
    rpc: Transactions[str] = Transactions(TIMING)
    rpc.open(request(1), "a", None, now_ms=0)
    rpc.open(request(2), "b", None, now_ms=50)
    assert rpc.close(1).purpose == "a"
    assert rpc.close(1) is None
    assert rpc.next_deadline_ms() == 150
    assert [p.request.txid for p in rpc.due(now_ms=150)[0]] == [2]


def test_answer_cache_answers_retransmissions_within_the_window_only():
    cache = AnswerCache(window_ms=1000, entries_max=2)
    cache.put(5, 1, Code.PING_ANS, EMPTY, now_ms=0)
    assert cache.get(5, 1, now_ms=999).code is Code.PING_ANS
    assert cache.get(6, 1, now_ms=10) is None  # another origin, same txid
    assert cache.get(5, 1, now_ms=1000) is None
    cache.put(5, 2, Code.PING_ANS, EMPTY, now_ms=10)
    cache.put(5, 3, Code.PING_ANS, EMPTY, now_ms=20)
    assert len(cache) == 2 and cache.get(5, 1, now_ms=30) is None  # bounded: the oldest went
    cache.expire(now_ms=1015)
    assert len(cache) == 1


def test_the_wait_for_a_neighbour_follows_its_round_trips_between_floor_and_ceiling():
    trips = RoundTrips(floor_ms=100, ceiling_ms=1000)
    assert trips.timeout_ms(5) == 100  # never heard: the configured wait
    trips.sample(5, 300)
    assert trips.timeout_ms(5) == 300 + 4 * 150  # RFC 6298: the first sample, half of it as deviation
    for _ in range(40):
        trips.sample(5, 300)
    assert 300 <= trips.timeout_ms(5) < 310  # steady: the round trip and almost no deviation
    trips.sample(6, 2)
    assert trips.timeout_ms(6) == 100  # a fast neighbour is waited for no less than configured
    trips.sample(7, 5000)
    assert trips.timeout_ms(7) == 1000  # nor a slow one longer than the ceiling


def test_a_late_ack_teaches_the_wait_and_a_dead_hop_keeps_the_wait_it_had():
    assert HopTracker(timeout_ms=100).round_trips.timeout_ms(9) == 100
    hops = HopTracker(timeout_ms=100, ceiling_ms=1000)
    assert hops.track(request(1), (), 9, frozenset(), now_ms=0)
    [silent] = hops.due(now_ms=100)  # 9 answers in 300 ms: the first forward times out...
    assert silent.next_id == 9
    assert hops.acked(1, 9, now_ms=300) is None  # ...and its ack, late, is a sample all the same
    hops.track(request(2), (), 9, frozenset(), now_ms=1000)
    assert hops.next_deadline_ms() == 1000 + 300 + 4 * 150 and hops.due(now_ms=1299) == []
    assert hops.acked(2, 9, now_ms=1300) is not None
    assert hops.acked(3, 9, now_ms=1400) is None  # an ack for nothing of ours teaches nothing
    for txid in range(10, 20):  # a dead neighbour: no ack ever, and its wait does not grow
        hops.track(request(txid), (), 8, frozenset(), now_ms=2000 + txid)
        hops.due(now_ms=10_000)
    assert hops.round_trips.timeout_ms(8) == 100
    assert HopTracker(timeout_ms=100).round_trips._ceiling_ms == 100 * HOP_WAIT_FACTOR_MAX
