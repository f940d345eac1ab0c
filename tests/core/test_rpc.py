"""Transactions with literal times: the retransmission schedule, timeouts and de-duplication."""

from peerphone.core.limits import HOP_BACKOFF_MAX, Timing
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


def test_the_wait_for_a_neighbour_follows_its_round_trips_and_doubles_while_it_is_silent():
    trips = RoundTrips(floor_ms=100, ceiling_ms=1000)
    assert trips.timeout_ms(5) == 100 and trips.srtt_ms(5) is None  # never heard: the configured wait
    trips.sample(5, 300)
    assert trips.timeout_ms(5) == 300 + 4 * 150  # RFC 6298: the first sample, half of it as deviation
    for _ in range(40):
        trips.sample(5, 300)
    assert 300 <= trips.timeout_ms(5) < 310 and trips.srtt_ms(5) == 300
    trips.sample(6, 2)
    assert trips.timeout_ms(6) == 100  # a fast neighbour is waited for no less than configured
    waits = []
    for _ in range(4):
        trips.silent(6)
        waits.append(trips.timeout_ms(6))
    assert waits == [200, 400, 800, 1000]  # doubled while silent, up to the ceiling
    trips.sample(6, 2)
    assert trips.timeout_ms(6) == 100  # the next answer ends the back-off


def test_a_forward_waits_as_long_as_its_next_hop_takes_to_acknowledge():
    assert HopTracker(timeout_ms=100).round_trips.timeout_ms(9) == 100
    hops = HopTracker(timeout_ms=100, ceiling_ms=1000)
    assert hops.track(request(1), (), 9, frozenset(), now_ms=0)
    [silent] = hops.due(now_ms=100)  # 9 answers in 150 ms: the first forward times out
    assert silent.next_id == 9
    hops.track(request(2), (), 9, frozenset(), now_ms=1000)
    assert hops.next_deadline_ms() == 1200 and hops.due(now_ms=1150) == []  # backed off: waited for
    assert hops.acked(2, 9, now_ms=1150)
    hops.track(request(3), (), 9, frozenset(), now_ms=2000)
    assert hops.next_deadline_ms() == 2000 + 150 + 4 * 75  # learnt from the ack
    hops.due(now_ms=10_000)
    for txid in range(10, 20):
        hops.track(request(txid), (), 9, frozenset(), now_ms=20_000)
        hops.due(now_ms=30_000)
    assert hops.round_trips.timeout_ms(9) == 1000  # a dead hop delays a request this long at most
    quiet = HopTracker(timeout_ms=100)
    for txid in range(10):
        quiet.track(request(txid), (), 9, frozenset(), now_ms=0)
        quiet.due(now_ms=10_000)
    assert quiet.round_trips.timeout_ms(9) == 100 * HOP_BACKOFF_MAX
