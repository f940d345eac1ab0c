"""The handset's behaviour: one table of (state, input) -> (state, actions), sans-I/O.

What a person does (the hook, the keys) and what the SIP side reports (a call coming in,
ringing, answered, refused, ended) are inputs; tones, the ringer, lamps and SIP actions
are outputs. Time comes in as `now_ms`; the machine keeps its own few deadlines (the
inter-digit wait, the hook flash, how long a dial tone waits for a first key) and says
when the next one is due. It never plays a tone or places a call itself: `hw/` and
`sip/ua.py` do what it says, as the SIP front does with its transactions' actions.

Before the table, a key or a timer is turned into what it means for the number being
dialled (`DialPlan`): one more digit, a complete number, or one that cannot be placed. A
hook going down in a call is held back FLASH_MS: up again by then, it is a flash (hold,
or answer the waiting call); still down, the call ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping

FLASH_MS = 700  # a hook down and up again within this is a flash, not a hang-up
DIAL_TONE_MS = 15_000  # off hook this long without a key: reorder tone
INTER_DIGIT_MS = 4000
KEYS = frozenset("0123456789*#")


class State(Enum):
    IDLE = "idle"  # on hook, no call
    DIAL_TONE = "dial tone"  # off hook, no key yet
    DIALING = "collecting digits"
    CALLING = "calling"  # INVITE sent, nothing heard yet
    RINGBACK = "ringback"  # the far end rings
    RINGING = "ringing"  # a call for us, on hook
    CONNECTED = "connected"
    HELD = "on hold"  # our only call held by a flash
    WAITING = "call waiting"  # connected, and a second call rings in
    ENDED = "far end hung up"  # tone until the hook goes down
    BUSY = "busy"  # the far end is busy
    REORDER = "reorder"  # a number that cannot be placed, or a call that failed


class Input(Enum):
    HOOK_UP = "hook up"
    HOOK_DOWN = "hook down"  # as the machine takes it: a hang-up (a flash is FLASH)
    FLASH = "hook flash"
    SWAP = "hook flash with a call on hold"  # the held one back, ours held
    DIGIT = "a digit"  # the number goes on
    NUMBER = "a complete number"
    NO_NUMBER = "a number that cannot be placed"
    DIAL_TONE_TIMEOUT = "no key for a while"
    INCOMING = "a call comes in"
    PROGRESS = "180 Ringing"
    ANSWERED = "the call is answered"
    BUSY = "486 or 600"
    FAILED = "another failure"
    REMOTE_END = "the far end hung up"  # BYE, or CANCEL of a call ringing here
    OTHER_END = "the second call ended"  # the one waiting or on hold


class Tone(Enum):
    DIAL = "dial"
    RINGBACK = "ringback"
    BUSY = "busy"
    REORDER = "reorder"
    CALL_WAITING = "call waiting"
    NONE = "none"


class Act(Enum):
    """What the machine asks for; the data (which call, which number) is in `Action`."""

    TONE = "play a tone"
    RINGER_ON = "ringer on"
    RINGER_OFF = "ringer off"
    IN_USE_LAMP = "in-use lamp"
    CALL = "place a call"
    ANSWER = "answer"
    REJECT = "refuse (486)"
    HANG_UP = "hang up"
    HOLD = "hold"
    RESUME = "resume"
    SEND_DTMF = "send a DTMF digit"
    MISSED = "a missed call"
    MESSAGE_LAMP = "message-waiting lamp"


@dataclass(frozen=True)
class Action:
    act: Act
    value: object = None  # the tone, the lamp's state, the AOR to call, the digit
    call: str | None = None  # which call (the UA's id for it)


_S, _I = State, Input
# Transitions whose outputs are fixed; the machine adds the data (which call) and does
# what needs it (placing the dialled number, swapping calls) in `_effects`.
TABLE: dict[tuple[State, Input], State] = {
    (_S.IDLE, _I.HOOK_UP): _S.DIAL_TONE,
    (_S.IDLE, _I.INCOMING): _S.RINGING,
    (_S.DIAL_TONE, _I.HOOK_DOWN): _S.IDLE,
    (_S.DIAL_TONE, _I.DIGIT): _S.DIALING,
    (_S.DIAL_TONE, _I.NUMBER): _S.CALLING,
    (_S.DIAL_TONE, _I.NO_NUMBER): _S.REORDER,
    (_S.DIAL_TONE, _I.DIAL_TONE_TIMEOUT): _S.REORDER,
    (_S.DIALING, _I.HOOK_DOWN): _S.IDLE,
    (_S.DIALING, _I.DIGIT): _S.DIALING,
    (_S.DIALING, _I.NUMBER): _S.CALLING,
    (_S.DIALING, _I.NO_NUMBER): _S.REORDER,
    (_S.CALLING, _I.HOOK_DOWN): _S.IDLE,
    (_S.CALLING, _I.PROGRESS): _S.RINGBACK,
    (_S.CALLING, _I.ANSWERED): _S.CONNECTED,
    (_S.CALLING, _I.BUSY): _S.BUSY,
    (_S.CALLING, _I.FAILED): _S.REORDER,
    (_S.RINGBACK, _I.HOOK_DOWN): _S.IDLE,
    (_S.RINGBACK, _I.ANSWERED): _S.CONNECTED,
    (_S.RINGBACK, _I.BUSY): _S.BUSY,
    (_S.RINGBACK, _I.FAILED): _S.REORDER,
    (_S.RINGING, _I.HOOK_UP): _S.CONNECTED,  # answered
    (_S.RINGING, _I.REMOTE_END): _S.IDLE,  # a missed call
    (_S.CONNECTED, _I.HOOK_DOWN): _S.IDLE,  # hangs up a held call too
    (_S.CONNECTED, _I.FLASH): _S.HELD,
    (_S.CONNECTED, _I.SWAP): _S.CONNECTED,
    (_S.CONNECTED, _I.DIGIT): _S.CONNECTED,  # sent as DTMF
    (_S.CONNECTED, _I.REMOTE_END): _S.ENDED,  # a held call stays held: flash to take it
    (_S.CONNECTED, _I.OTHER_END): _S.CONNECTED,
    (_S.CONNECTED, _I.INCOMING): _S.WAITING,
    (_S.HELD, _I.FLASH): _S.CONNECTED,
    (_S.HELD, _I.HOOK_DOWN): _S.IDLE,
    (_S.HELD, _I.REMOTE_END): _S.ENDED,
    (_S.WAITING, _I.FLASH): _S.CONNECTED,  # the first call held, the second answered
    (_S.WAITING, _I.HOOK_DOWN): _S.RINGING,  # the first call ends; the second rings on
    (_S.WAITING, _I.DIGIT): _S.WAITING,
    (_S.WAITING, _I.REMOTE_END): _S.RINGING,  # the first caller hung up; the second rings on
    (_S.WAITING, _I.OTHER_END): _S.CONNECTED,  # the second caller gave up: a missed call
    (_S.ENDED, _I.HOOK_DOWN): _S.IDLE,
    (_S.ENDED, _I.FLASH): _S.CONNECTED,  # the call left on hold, taken back
    (_S.BUSY, _I.HOOK_DOWN): _S.IDLE,
    (_S.REORDER, _I.HOOK_DOWN): _S.IDLE,
}
# A call coming in where no row takes it is refused 486: off hook and not taking calls, or
# two calls here already.

TONE_OF = {_S.DIAL_TONE: Tone.DIAL, _S.RINGBACK: Tone.RINGBACK, _S.BUSY: Tone.BUSY, _S.REORDER: Tone.REORDER,
           _S.ENDED: Tone.REORDER, _S.WAITING: Tone.CALL_WAITING}
OFF_HOOK = frozenset(set(State) - {_S.IDLE, _S.RINGING})


class DialPlanError(ValueError):
    pass


@dataclass(frozen=True)
class DialPlan:
    """Digits to AORs: speed dials and a directory in one table; `#` sends what was dialled."""

    codes: Mapping[str, str]
    inter_digit_ms: int = INTER_DIGIT_MS

    @classmethod
    def of(cls, speed_dials: Mapping[str, str], directory: Mapping[str, str],
           inter_digit_ms: int = INTER_DIGIT_MS) -> "DialPlan":
        for code in [*speed_dials, *directory]:
            if not code or set(code) - set("0123456789*"):
                raise DialPlanError(f"dial code {code!r}: digits and * only")
        both = set(speed_dials) & set(directory)
        if both:
            raise DialPlanError(f"dial code {sorted(both)[0]!r} is both a speed dial and a directory number")
        return cls({**speed_dials, **directory}, inter_digit_ms)

    def meaning(self, digits: str, *, sent: bool) -> Input:
        """What `digits` are: a number to call, one that cannot be, or more to come. `sent`:
        # was pressed or the inter-digit time ran out."""
        if digits in self.codes and (sent or not any(c != digits and c.startswith(digits) for c in self.codes)):
            return Input.NUMBER
        if sent or not any(c.startswith(digits) for c in self.codes):
            return Input.NO_NUMBER
        return Input.DIGIT


@dataclass
class Handset:
    """One phone's state. Feed it inputs; take `actions()`; call `handle_timer` when due."""

    plan: DialPlan
    state: State = State.IDLE
    digits: str = ""
    active: str | None = None  # the call we talk in, dial or ring for
    other: str | None = None  # a second call: ringing while we talk, or held
    missed: list[str] = field(default_factory=list)  # who called while nobody answered
    _callers: dict[str, str] = field(default_factory=dict)  # call -> who makes it, while it rings
    _deadline_ms: int | None = None
    _flash_ms: int | None = None  # the hook went down in a call at this time
    _out: list[Action] = field(default_factory=list)

    def actions(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def next_deadline_ms(self) -> int | None:
        due = [t for t in (self._deadline_ms, None if self._flash_ms is None else self._flash_ms + FLASH_MS)
               if t is not None]
        return min(due) if due else None

    # -- what a person does

    def hook(self, up: bool, *, now_ms: int) -> None:
        if not up and (self.state, _I.FLASH) in TABLE and (self.state is not _S.ENDED or self.other):
            self._flash_ms = now_ms  # a flash or a hang-up: FLASH_MS tells
            return
        if up and self._flash_ms is not None:
            self._flash_ms = None
            self._fire(_I.SWAP if self.state is _S.CONNECTED and self.other else _I.FLASH, now_ms)
            return
        self._fire(_I.HOOK_UP if up else _I.HOOK_DOWN, now_ms)

    def key(self, key: str, *, now_ms: int) -> None:
        if key not in KEYS:
            raise ValueError(f"no such key: {key!r}")
        if self.state in (_S.CONNECTED, _S.WAITING):
            self._out.append(Action(Act.SEND_DTMF, key, self.active))
        elif self.state in (_S.DIAL_TONE, _S.DIALING):
            if key != "#":
                self.digits += key
            self._fire(self.plan.meaning(self.digits, sent=key == "#"), now_ms)
        # anywhere else a key means nothing (ringing back, busy, on hook...)

    def messages_waiting(self, count: int) -> None:
        """Offline messages kept for this phone's AOR: the lamp says so."""
        self._out.append(Action(Act.MESSAGE_LAMP, count > 0))

    # -- what the SIP side reports

    def placed(self, call: str) -> None:
        """The UA's id for the call the last CALL action asked for."""
        if self.state in (_S.CALLING, _S.RINGBACK) and self.active is None:
            self.active = call

    def incoming(self, call: str, caller: str, *, now_ms: int) -> None:
        if (self.state, _I.INCOMING) not in TABLE or self.other is not None:
            self._out.append(Action(Act.REJECT, 486, call))
            return
        self._callers[call] = caller
        self._fire(_I.INCOMING, now_ms, call)

    def progress(self, call: str, *, now_ms: int) -> None:
        if call == self.active:
            self._fire(_I.PROGRESS, now_ms, call)

    def answered(self, call: str, *, now_ms: int) -> None:
        if call == self.active:
            self._fire(_I.ANSWERED, now_ms, call)

    def failed(self, call: str, status: int, *, now_ms: int) -> None:
        if call == self.active and self.state in (_S.CALLING, _S.RINGBACK):
            self._fire(_I.BUSY if status in (486, 600) else _I.FAILED, now_ms, call)
        else:
            self.remote_end(call, now_ms=now_ms)

    def remote_end(self, call: str, *, now_ms: int) -> None:
        if call == self.active:
            self._fire(_I.REMOTE_END, now_ms, call)
        elif call == self.other:
            self._fire(_I.OTHER_END, now_ms, call)
        self._callers.pop(call, None)

    def handle_timer(self, *, now_ms: int) -> None:
        if self._flash_ms is not None and now_ms >= self._flash_ms + FLASH_MS:
            self._flash_ms = None
            self._fire(_I.HOOK_DOWN, now_ms)
        if self._deadline_ms is not None and now_ms >= self._deadline_ms:
            self._deadline_ms = None
            if self.state is _S.DIAL_TONE:
                self._fire(_I.DIAL_TONE_TIMEOUT, now_ms)
            elif self.state is _S.DIALING:
                self._fire(self.plan.meaning(self.digits, sent=True), now_ms)

    # -- the table, and what needs data

    def _fire(self, event: Input, now_ms: int, call: str | None = None) -> None:
        before = self.state
        after = TABLE.get((before, event))
        if after is None:
            return  # not meaningful here (a stray report)
        self.state = after
        self._effects(before, event, call)
        if after is not before or event is _I.DIGIT:
            self._deadline_ms = (now_ms + DIAL_TONE_MS if after is _S.DIAL_TONE else
                                 now_ms + self.plan.inter_digit_ms if after is _S.DIALING else None)
        if TONE_OF.get(after) != TONE_OF.get(before):
            self._out.append(Action(Act.TONE, TONE_OF.get(after, Tone.NONE)))
        if (before in OFF_HOOK) != (after in OFF_HOOK):
            self._out.append(Action(Act.IN_USE_LAMP, after in OFF_HOOK))

    def _effects(self, before: State, event: Input, call: str | None) -> None:
        out = self._out.append
        if event is _I.INCOMING:
            if before is _S.IDLE:
                self.active = call
                out(Action(Act.RINGER_ON, self._callers.get(call or ""), call))
            else:
                self.other = call  # call waiting: a tone, not the ringer
        elif event is _I.NUMBER:
            out(Action(Act.CALL, self.plan.codes[self.digits]))
            self.digits = ""
        elif event in (_I.NO_NUMBER, _I.HOOK_DOWN) and before in (_S.DIAL_TONE, _S.DIALING):
            self.digits = ""
        elif event is _I.HOOK_UP and before is _S.RINGING:  # answering
            out(Action(Act.RINGER_OFF, None, self.active))
            out(Action(Act.ANSWER, None, self.active))
        elif event is _I.REMOTE_END and before is _S.RINGING:
            out(Action(Act.RINGER_OFF, None, call))
            self._miss(call)
            self.active = None
        elif event is _I.REMOTE_END and before is _S.WAITING or event is _I.HOOK_DOWN and before is _S.WAITING:
            if event is _I.HOOK_DOWN:
                out(Action(Act.HANG_UP, None, self.active))
            self.active, self.other = self.other, None
            out(Action(Act.RINGER_ON, self._callers.get(self.active or ""), self.active))
        elif event is _I.REMOTE_END:
            self.active = None  # a call on hold stays in `other`
        elif event is _I.OTHER_END:
            if before is _S.WAITING:
                self._miss(call)
            self.other = None
        elif event is _I.SWAP or event is _I.FLASH and before is _S.WAITING:
            out(Action(Act.HOLD, None, self.active))  # ours held, the other taken
            out(Action(Act.ANSWER if before is _S.WAITING else Act.RESUME, None, self.other))
            self.active, self.other = self.other, self.active
        elif event is _I.FLASH and before is _S.CONNECTED:
            out(Action(Act.HOLD, None, self.active))
        elif event is _I.FLASH and before is _S.ENDED:
            self.active, self.other = self.other, None
            out(Action(Act.RESUME, None, self.active))
        elif event is _I.FLASH:
            out(Action(Act.RESUME, None, self.active))
        elif event is _I.HOOK_DOWN:
            if self.active is not None or before in (_S.CALLING, _S.RINGBACK):
                out(Action(Act.HANG_UP, None, self.active))  # while calling: the call being placed
            if self.other is not None:
                out(Action(Act.HANG_UP, None, self.other))  # a call on hold ends with the hang-up
            self.active = self.other = None
        elif event in (_I.BUSY, _I.FAILED):
            self.active = None

    def _miss(self, call: str | None) -> None:
        caller = self._callers.pop(call or "", "")
        self.missed.append(caller)
        self._out.append(Action(Act.MISSED, caller, call))
