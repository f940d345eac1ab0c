"""RFC 3261 §17 transactions: every row of the table, and every timer, with literal times."""

from __future__ import annotations

import pytest
from peerphone.sip.transaction import (
    T1_MS,
    T4_MS,
    TABLE,
    Action,
    Input,
    Kind,
    State,
    Transaction,
    TransactionError,
    response_input,
)

ICT, NICT, IST, NIST = Kind.INVITE_CLIENT, Kind.NON_INVITE_CLIENT, Kind.INVITE_SERVER, Kind.NON_INVITE_SERVER
RESEND = (Action.RESEND_REQUEST,)


def at(kind: Kind, state: State, *, reliable: bool = False, now_ms: int = 0) -> Transaction:
    """A transaction brought into `state` by the inputs a real exchange would give it."""
    t = Transaction.start(kind, reliable=reliable, now_ms=now_ms)
    path = {
        (ICT, State.PROCEEDING): [Input.PROVISIONAL], (ICT, State.COMPLETED): [Input.FAILURE],
        (NICT, State.PROCEEDING): [Input.PROVISIONAL], (NICT, State.COMPLETED): [Input.SUCCESS],
        (IST, State.COMPLETED): [Input.FAILURE], (IST, State.CONFIRMED): [Input.FAILURE, Input.ACK],
        (NIST, State.PROCEEDING): [Input.PROVISIONAL], (NIST, State.COMPLETED): [Input.SUCCESS],
    }.get((kind, state), [])
    for event in path:
        t.fire(event, now_ms=now_ms)
    assert t.state is state
    return t


def fire_timers(t: Transaction, until_ms: int) -> list[tuple[int, tuple[Action, ...]]]:
    """Run the transaction's timers up to `until_ms`: (time, actions) each time one fired."""
    fired = []
    while (deadline := t.next_deadline_ms()) is not None and deadline <= until_ms:
        fired.append((deadline, t.expire(now_ms=deadline)))
    return fired


def test_response_classes():
    assert [response_input(s) for s in (100, 180, 200, 299, 300, 487, 699)] == [
        Input.PROVISIONAL, Input.PROVISIONAL, Input.SUCCESS, Input.SUCCESS, Input.FAILURE, Input.FAILURE,
        Input.FAILURE]


@pytest.mark.parametrize(("kind", "state", "event"), sorted(TABLE, key=str))
def test_every_row_of_the_table_is_what_a_transaction_does(kind, state, event):
    """Each (kind, state, input) row: the state it leads to and the actions it asks for.
    Timer inputs are fired by the clock; the others by `fire`."""
    want_state, want_actions = TABLE[(kind, state, event)]
    t = at(kind, state)
    timers = {Input.A, Input.B, Input.D, Input.E, Input.F, Input.G, Input.H, Input.I, Input.J, Input.K}
    if event in timers:
        deadline = t.next_deadline_ms()
        assert deadline is not None
        actions = ()
        while t.state is state and (deadline := t.next_deadline_ms()) is not None:
            actions = t.expire(now_ms=deadline)
            if actions == want_actions and t.state is want_state:
                break
        assert (t.state, actions) == (want_state, want_actions)
    else:
        assert t.fire(event, now_ms=10) == want_actions
        assert t.state is want_state


def test_invite_client_timer_a_doubles_until_timer_b_gives_up_at_64_t1():
    t = Transaction.start(ICT, reliable=False, now_ms=1000)
    fired = fire_timers(t, 1000 + 64 * T1_MS)
    resends = [ms for ms, actions in fired if actions == RESEND]
    assert resends == [1500, 2500, 4500, 8500, 16500, 32500]  # T1, 2T1 ... 32T1 after the previous: 7 sends
    assert fired[-1] == (1000 + 64 * T1_MS, (Action.TIMED_OUT,))
    assert t.terminated and t.next_deadline_ms() is None


def test_invite_client_over_tcp_sends_once_and_its_failure_ends_it_at_once():
    t = Transaction.start(ICT, reliable=True, now_ms=0)
    assert t.next_deadline_ms() == 64 * T1_MS  # Timer B only: no Timer A on a reliable transport
    assert t.fire(Input.FAILURE, now_ms=100) == (Action.SEND_ACK, Action.PASS_UP)
    assert t.terminated  # Timer D is zero on a reliable transport


def test_invite_client_completed_acks_every_failure_retransmission_for_32_s():
    t = at(ICT, State.COMPLETED, now_ms=0)
    assert t.fire(Input.FAILURE, now_ms=1000) == (Action.SEND_ACK,)
    assert t.fire(Input.SUCCESS, now_ms=1000) == ()  # not in the table: absorbed
    assert fire_timers(t, 31_999) == []
    assert fire_timers(t, 32_000) == [(32_000, ())] and t.terminated


def test_invite_client_stops_retransmitting_on_a_provisional_and_a_2xx_ends_it():
    t = Transaction.start(ICT, reliable=False, now_ms=0)
    assert t.fire(Input.PROVISIONAL, now_ms=200) == (Action.PASS_UP,)
    assert t.next_deadline_ms() is None  # neither A nor B in Proceeding
    assert t.fire(Input.SUCCESS, now_ms=5000) == (Action.PASS_UP,) and t.terminated


def test_non_invite_client_timer_e_doubles_to_t2_and_is_t2_in_proceeding():
    t = Transaction.start(NICT, reliable=False, now_ms=0)
    fired = fire_timers(t, 7500)
    assert [ms for ms, a in fired if a == RESEND] == [500, 1500, 3500, 7500]  # 500, 1000, 2000, 4000 (T2)
    t.fire(Input.PROVISIONAL, now_ms=8000)
    fired = fire_timers(t, 20_000)
    assert [ms for ms, a in fired if a == RESEND] == [11_500, 15_500, 19_500]  # the pending E, then every T2
    assert fire_timers(t, 64 * T1_MS)[-1] == (64 * T1_MS, (Action.TIMED_OUT,)) and t.terminated


def test_non_invite_client_keeps_absorbing_response_retransmissions_for_t4():
    t = Transaction.start(NICT, reliable=False, now_ms=0)
    assert t.fire(Input.SUCCESS, now_ms=100) == (Action.PASS_UP,)
    assert t.state is State.COMPLETED and t.next_deadline_ms() == 100 + T4_MS
    assert t.fire(Input.SUCCESS, now_ms=200) == ()
    assert fire_timers(t, 100 + T4_MS) == [(100 + T4_MS, ())] and t.terminated
    reliable = Transaction.start(NICT, reliable=True, now_ms=0)
    assert reliable.fire(Input.SUCCESS, now_ms=100) == (Action.PASS_UP,) and reliable.terminated  # K is zero


def test_invite_server_retransmits_its_failure_until_the_ack_then_absorbs_for_t4():
    t = Transaction.start(IST, reliable=False, now_ms=0)
    assert t.fire(Input.PROVISIONAL, now_ms=0) == (Action.SEND_RESPONSE,)
    assert t.fire(Input.REQUEST, now_ms=300) == (Action.RESEND_RESPONSE,)  # the 100 again
    assert t.fire(Input.FAILURE, now_ms=1000) == (Action.SEND_RESPONSE,)
    fired = fire_timers(t, 9000)
    assert [ms for ms, _ in fired] == [1500, 2500, 4500, 8500]  # G: 500, 1000, 2000, 4000 (T2)
    assert all(actions == (Action.RESEND_RESPONSE,) for _, actions in fired)
    assert t.fire(Input.ACK, now_ms=9000) == () and t.state is State.CONFIRMED
    assert t.fire(Input.ACK, now_ms=9100) == ()  # retransmitted ACKs are absorbed
    assert fire_timers(t, 9000 + T4_MS) == [(9000 + T4_MS, ())] and t.terminated


def test_invite_server_without_ack_gives_up_at_timer_h_and_over_tcp_sends_once():
    t = Transaction.start(IST, reliable=True, now_ms=0)
    t.fire(Input.FAILURE, now_ms=0)
    assert t.next_deadline_ms() == 64 * T1_MS  # H only: no G on a reliable transport
    assert fire_timers(t, 64 * T1_MS) == [(64 * T1_MS, (Action.TIMED_OUT,))] and t.terminated
    acked = Transaction.start(IST, reliable=True, now_ms=0)
    acked.fire(Input.FAILURE, now_ms=0)
    assert acked.fire(Input.ACK, now_ms=10) == () and acked.terminated  # Timer I is zero


def test_invite_server_ends_on_a_2xx():
    t = Transaction.start(IST, reliable=False, now_ms=0)
    assert t.fire(Input.SUCCESS, now_ms=50) == (Action.SEND_RESPONSE,) and t.terminated


def test_non_invite_server_absorbs_in_trying_and_keeps_its_answer_64_t1_over_udp_only():
    t = Transaction.start(NIST, reliable=False, now_ms=0)
    assert t.fire(Input.REQUEST, now_ms=100) == ()  # nothing to repeat yet
    assert t.fire(Input.SUCCESS, now_ms=200) == (Action.SEND_RESPONSE,)
    assert t.fire(Input.REQUEST, now_ms=300) == (Action.RESEND_RESPONSE,)
    assert fire_timers(t, 200 + 64 * T1_MS - 1) == []
    assert fire_timers(t, 200 + 64 * T1_MS) == [(200 + 64 * T1_MS, ())] and t.terminated
    reliable = Transaction.start(NIST, reliable=True, now_ms=0)
    assert reliable.fire(Input.SUCCESS, now_ms=0) == (Action.SEND_RESPONSE,) and reliable.terminated


def test_a_server_cannot_send_what_its_state_forbids():
    done = at(NIST, State.COMPLETED)
    with pytest.raises(TransactionError):
        done.fire(Input.SUCCESS, now_ms=0)
    with pytest.raises(TransactionError):
        at(IST, State.CONFIRMED).fire(Input.PROVISIONAL, now_ms=0)


def test_unknown_network_inputs_are_absorbed():
    assert at(IST, State.PROCEEDING).fire(Input.ACK, now_ms=0) == ()
    assert at(NICT, State.COMPLETED).fire(Input.FAILURE, now_ms=0) == ()
    terminated = Transaction.start(NIST, reliable=True, now_ms=0)
    terminated.fire(Input.SUCCESS, now_ms=0)
    assert terminated.fire(Input.REQUEST, now_ms=0) == ()

