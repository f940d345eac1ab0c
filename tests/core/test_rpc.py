"""Transactions with literal times: the retransmission schedule, timeouts and de-duplication."""

from peerphone.core.limits import Timing
from peerphone.core.rpc import AnswerCache, Transactions
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
