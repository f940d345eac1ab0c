"""The handset's state machine, every row of its table, with literal times."""

from __future__ import annotations

import pytest
from peerphone.phone.machine import (
    DIAL_TONE_MS,
    FLASH_MS,
    INTER_DIGIT_MS,
    TABLE,
    Act,
    Action,
    DialPlan,
    DialPlanError,
    Handset,
    Input,
    State,
    Tone,
)

BOB, CAROL, DAVE = "sip:bob@example.net", "sip:carol@example.net", "sip:dave@example.net"
PLAN = DialPlan.of({"1": BOB}, {"200": CAROL, "201": DAVE})
T = 1_000_000  # a literal start time: nothing may depend on it being 0


def reach(state: State) -> Handset:
    """A handset brought to `state` by the inputs a person and the SIP side give it."""
    h = Handset(PLAN)
    if state is State.IDLE:
        return h
    if state in (State.RINGING, State.CONNECTED, State.HELD, State.WAITING, State.ENDED):
        h.incoming("in1", "sip:alice@example.net", now_ms=T)
        if state is not State.RINGING:
            h.hook(True, now_ms=T + 10)
        if state is State.HELD:
            flash(h, T + 20)
        if state is State.WAITING:
            h.incoming("in2", "sip:erin@example.net", now_ms=T + 20)
        if state is State.ENDED:
            h.remote_end("in1", now_ms=T + 20)
    else:
        h.hook(True, now_ms=T)
        if state is State.DIALING:
            h.key("2", now_ms=T + 10)
        if state is State.REORDER:
            h.key("9", now_ms=T + 10)
        if state in (State.CALLING, State.RINGBACK, State.BUSY):
            h.key("1", now_ms=T + 10)
            h.placed("out1")
        if state is State.RINGBACK:
            h.progress("out1", now_ms=T + 20)
        if state is State.BUSY:
            h.failed("out1", 486, now_ms=T + 20)
    assert h.state is state
    h.actions()
    return h


def flash(h: Handset, at: int) -> None:
    h.hook(False, now_ms=at)
    h.hook(True, now_ms=at + FLASH_MS - 1)


def hang_up(h: Handset, at: int) -> None:
    h.hook(False, now_ms=at)
    if h.next_deadline_ms() == at + FLASH_MS:  # in a call: a hang-up once the flash time is over
        assert h.state is not State.IDLE or h.active is None
        h.handle_timer(now_ms=at + FLASH_MS)


def give(h: Handset, event: Input, at: int) -> None:
    """`event`, as the outside world makes it happen."""
    if event is Input.HOOK_UP:
        h.hook(True, now_ms=at)
    elif event is Input.HOOK_DOWN:
        hang_up(h, at)
    elif event is Input.FLASH:
        flash(h, at)
    elif event is Input.SWAP:
        h.incoming("in2", "sip:erin@example.net", now_ms=at)
        flash(h, at + 10)  # now one call held, the other up: the next flash swaps
        h.actions()
        flash(h, at + 1000)
    elif event is Input.DIGIT:
        h.key("0" if h.state is State.DIALING else "2", now_ms=at)
    elif event is Input.NUMBER:
        for k in ("00" if h.state is State.DIALING else "1"):
            h.key(k, now_ms=at)
    elif event is Input.NO_NUMBER:
        h.key("9", now_ms=at)
    elif event is Input.DIAL_TONE_TIMEOUT:
        h.handle_timer(now_ms=at + DIAL_TONE_MS)
    elif event is Input.INCOMING:
        h.incoming("in9", "sip:zed@example.net", now_ms=at)
    elif event is Input.PROGRESS:
        h.progress("out1", now_ms=at)
    elif event is Input.ANSWERED:
        h.answered("out1", now_ms=at)
    elif event is Input.BUSY:
        h.failed("out1", 486, now_ms=at)
    elif event is Input.FAILED:
        h.failed("out1", 503, now_ms=at)
    elif event is Input.REMOTE_END:
        h.remote_end(h.active or "", now_ms=at)
    elif event is Input.OTHER_END:
        if h.other is None:  # connected with nothing else: make a call wait, then hold it
            h.incoming("in2", "sip:erin@example.net", now_ms=at)
            flash(h, at + 10)
            h.actions()
        h.remote_end(h.other or "", now_ms=at + 100)
    elif event is Input.FLASH:
        flash(h, at)


ROWS = sorted(TABLE.items(), key=lambda row: (list(State).index(row[0][0]), list(Input).index(row[0][1])))


@pytest.mark.parametrize("row", ROWS, ids=[f"{s.name}-{i.name}" for (s, i), _ in ROWS])
def test_every_row_of_the_table(row):
    (state, event), after = row
    if (state, event) == (State.ENDED, Input.FLASH):
        h = reach(State.CONNECTED)
        h.incoming("in2", "sip:erin@example.net", now_ms=T + 30)
        flash(h, T + 40)  # erin taken, alice held
        h.remote_end(h.active or "", now_ms=T + 50)  # erin hangs up: alice waits on hold
        assert h.state is State.ENDED and h.actions()
        flash(h, T + 60)
        assert h.state is State.CONNECTED and h.actions()[0] == Action(Act.RESUME, None, "in1")
        return
    h = reach(state)
    give(h, event, T + 100)
    assert h.state is after


def test_a_speed_dial_is_called_at_once_and_a_directory_number_when_complete():
    h = reach(State.DIAL_TONE)
    h.key("1", now_ms=T)
    assert h.state is State.CALLING and Action(Act.CALL, BOB) in h.actions()
    h = reach(State.DIAL_TONE)
    h.key("2", now_ms=T)
    assert h.actions() == [Action(Act.TONE, Tone.NONE)]  # the dial tone stops at the first key
    h.key("0", now_ms=T + 500)
    h.key("1", now_ms=T + 900)
    assert h.state is State.CALLING and h.actions()[0] == Action(Act.CALL, DAVE)


def test_the_inter_digit_wait_and_hash_send_what_was_dialled_or_give_reorder():
    plan = DialPlan.of({}, {"20": CAROL, "201": DAVE})
    h = Handset(plan)
    h.hook(True, now_ms=T)
    h.key("2", now_ms=T + 100)
    h.key("0", now_ms=T + 200)  # 20 is a number, and the start of 201: wait
    assert h.state is State.DIALING and h.next_deadline_ms() == T + 200 + INTER_DIGIT_MS
    h.handle_timer(now_ms=T + 200 + INTER_DIGIT_MS - 1)
    assert h.state is State.DIALING
    h.handle_timer(now_ms=T + 200 + INTER_DIGIT_MS)
    assert h.state is State.CALLING and Action(Act.CALL, CAROL) in h.actions()
    h = Handset(plan)
    h.hook(True, now_ms=T)
    h.key("2", now_ms=T)
    h.key("#", now_ms=T + 50)  # 2 is no number
    assert h.state is State.REORDER and h.actions()[-1] == Action(Act.TONE, Tone.REORDER)
    h = Handset(plan)
    h.hook(True, now_ms=T)
    h.key("2", now_ms=T)
    h.key("0", now_ms=T)
    h.key("#", now_ms=T + 50)
    assert h.state is State.CALLING


def test_a_dial_tone_waits_fifteen_seconds_for_a_key_then_reorder():
    h = Handset(PLAN)
    h.hook(True, now_ms=T)
    assert h.actions() == [Action(Act.TONE, Tone.DIAL), Action(Act.IN_USE_LAMP, True)]
    assert h.next_deadline_ms() == T + DIAL_TONE_MS
    h.handle_timer(now_ms=T + DIAL_TONE_MS)
    assert h.state is State.REORDER and h.actions() == [Action(Act.TONE, Tone.REORDER)]
    h.hook(False, now_ms=T + DIAL_TONE_MS + 1)
    assert h.state is State.IDLE and h.actions() == [Action(Act.TONE, Tone.NONE), Action(Act.IN_USE_LAMP, False)]


def test_an_incoming_call_rings_is_answered_and_the_hook_ends_it_after_the_flash_time():
    h = Handset(PLAN)
    h.incoming("c", "sip:alice@example.net", now_ms=T)
    assert h.actions() == [Action(Act.RINGER_ON, "sip:alice@example.net", "c")]
    h.hook(True, now_ms=T + 3000)
    assert h.actions() == [Action(Act.RINGER_OFF, None, "c"), Action(Act.ANSWER, None, "c"),
                           Action(Act.IN_USE_LAMP, True)]
    h.key("5", now_ms=T + 4000)
    assert h.actions() == [Action(Act.SEND_DTMF, "5", "c")]
    h.hook(False, now_ms=T + 9000)
    assert h.state is State.CONNECTED and h.actions() == []  # could still be a flash
    h.handle_timer(now_ms=T + 9000 + FLASH_MS - 1)
    assert h.state is State.CONNECTED
    h.handle_timer(now_ms=T + 9000 + FLASH_MS)
    assert h.state is State.IDLE and h.actions() == [Action(Act.HANG_UP, None, "c"), Action(Act.IN_USE_LAMP, False)]


def test_off_hook_and_not_taking_calls_is_busy_and_a_third_call_is_too():
    h = reach(State.DIALING)
    h.incoming("x", "sip:zed@example.net", now_ms=T)
    assert h.state is State.DIALING and h.actions() == [Action(Act.REJECT, 486, "x")]
    h = reach(State.WAITING)
    h.incoming("y", "sip:zed@example.net", now_ms=T)
    assert h.actions() == [Action(Act.REJECT, 486, "y")]


def test_call_waiting_answer_the_second_hold_the_first_swap_and_the_first_hangs_up():
    h = reach(State.CONNECTED)
    h.incoming("in2", "sip:erin@example.net", now_ms=T)
    assert h.state is State.WAITING and h.actions() == [Action(Act.TONE, Tone.CALL_WAITING)]
    flash(h, T + 100)
    assert h.actions() == [Action(Act.HOLD, None, "in1"), Action(Act.ANSWER, None, "in2"), Action(Act.TONE, Tone.NONE)]
    assert (h.active, h.other) == ("in2", "in1")
    flash(h, T + 2000)
    assert h.actions() == [Action(Act.HOLD, None, "in2"), Action(Act.RESUME, None, "in1")]
    h.remote_end("in2", now_ms=T + 3000)  # the one on hold leaves
    assert h.state is State.CONNECTED and h.other is None and h.missed == []


def test_a_waiting_caller_who_gives_up_is_a_missed_call_and_so_is_one_nobody_answers():
    h = reach(State.WAITING)
    h.remote_end("in2", now_ms=T)
    assert h.state is State.CONNECTED and h.missed == ["sip:erin@example.net"]
    h = Handset(PLAN)
    h.incoming("c", "sip:alice@example.net", now_ms=T)
    h.remote_end("c", now_ms=T + 20_000)
    assert h.state is State.IDLE and h.missed == ["sip:alice@example.net"]
    assert h.actions()[-2:] == [Action(Act.RINGER_OFF, None, "c"), Action(Act.MISSED, "sip:alice@example.net", "c")]


def test_hanging_up_while_a_call_waits_lets_it_ring():
    h = reach(State.WAITING)
    hang_up(h, T)
    assert h.state is State.RINGING and h.active == "in2"
    assert h.actions() == [Action(Act.HANG_UP, None, "in1"), Action(Act.RINGER_ON, "sip:erin@example.net", "in2"),
                           Action(Act.TONE, Tone.NONE), Action(Act.IN_USE_LAMP, False)]


def test_the_far_end_hanging_up_first_leaves_a_tone_until_the_hook_goes_down():
    h = reach(State.CONNECTED)
    h.remote_end("in1", now_ms=T)
    assert h.state is State.ENDED and h.actions() == [Action(Act.TONE, Tone.REORDER)]
    h.key("5", now_ms=T + 10)
    assert h.actions() == []  # no call to send it in
    h.hook(False, now_ms=T + 5000)
    assert h.state is State.IDLE  # at once: nothing to flash to


def test_a_busy_callee_gives_busy_tone_and_a_failed_call_reorder():
    h = reach(State.RINGBACK)
    h.failed("out1", 486, now_ms=T)
    assert h.state is State.BUSY and h.actions() == [Action(Act.TONE, Tone.BUSY)] and h.active is None
    h = reach(State.CALLING)
    h.failed("out1", 480, now_ms=T)
    assert h.state is State.REORDER


def test_hanging_up_while_calling_cancels_the_call_being_placed():
    h = reach(State.CALLING)
    h.hook(False, now_ms=T)
    assert h.state is State.IDLE and h.actions()[0] == Action(Act.HANG_UP, None, "out1")


def test_message_waiting_lights_the_lamp_and_reports_for_other_calls_change_nothing():
    h = Handset(PLAN)
    h.messages_waiting(2)
    h.messages_waiting(0)
    assert h.actions() == [Action(Act.MESSAGE_LAMP, True), Action(Act.MESSAGE_LAMP, False)]
    h.answered("nobody", now_ms=T)
    h.progress("nobody", now_ms=T)
    h.remote_end("nobody", now_ms=T)
    assert h.state is State.IDLE and h.actions() == []


def test_a_dial_plan_refuses_codes_that_are_not_digits_or_taken_twice():
    with pytest.raises(DialPlanError, match="'1a'"):
        DialPlan.of({"1a": BOB}, {})
    with pytest.raises(DialPlanError, match="both a speed dial and a directory number"):
        DialPlan.of({"7": BOB}, {"7": CAROL})
    with pytest.raises(ValueError, match="no such key"):
        Handset(PLAN).key("A", now_ms=T)
