"""RFC 3261 §17 transactions as one table of (kind, state, input) -> (state, actions), sans-I/O.

Four machines share the table: the INVITE client (§17.1.1), the non-INVITE client
(§17.1.2), the INVITE server (§17.2.1) and the non-INVITE server (§17.2.2). A
client's inputs are the responses it receives and its timers; a server's are the
request's retransmissions, the ACK, the responses its user sends, and its timers.
The machine never builds or sends a message: it says what to do (`Action`), and
the front does it with the bytes it holds.

Rules the table encodes, each from the RFC:
- Timers A, E and G (retransmissions) run only on unreliable transports (§17.1.1.2,
  §17.1.2.2, §17.2.1); A doubles without bound, E and G double up to T2, E is T2
  in Proceeding.
- Timers B, F and H give up after 64*T1; J keeps a completed non-INVITE server
  transaction 64*T1 to absorb retransmissions, D keeps a completed INVITE client
  32 s; on a reliable transport J, D, I and K are zero (the transaction ends at once).
- A 2xx ends an INVITE transaction on both sides: the ACK to a 2xx is a request of
  its own (§17.1.1.2, §17.2.1), routed like any other.
- A response class a server's user may not send in its state is the user's error
  (`TransactionError`); an input from the network that the table does not name is
  absorbed (a late or duplicated response, a stray ACK).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

T1_MS = 500
T2_MS = 4000
T4_MS = 5000
TIMER_D_UNRELIABLE_MS = 32_000


class Kind(Enum):
    INVITE_CLIENT = "ICT"
    NON_INVITE_CLIENT = "NICT"
    INVITE_SERVER = "IST"
    NON_INVITE_SERVER = "NIST"

    @property
    def is_client(self) -> bool:
        return self in (Kind.INVITE_CLIENT, Kind.NON_INVITE_CLIENT)


class State(Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Input(Enum):
    PROVISIONAL = "1xx"  # received (client) or sent (server)
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    REQUEST = "request retransmitted"  # server only
    ACK = "ACK"  # INVITE server only
    TRANSPORT_ERROR = "transport error"
    A = "Timer A"
    B = "Timer B"
    D = "Timer D"
    E = "Timer E"
    F = "Timer F"
    G = "Timer G"
    H = "Timer H"
    I = "Timer I"  # noqa: E741 - the RFC's name
    J = "Timer J"
    K = "Timer K"


class Action(Enum):
    RESEND_REQUEST = "resend the request"
    SEND_ACK = "send the ACK to a failure"  # INVITE client, §17.1.1.3
    SEND_RESPONSE = "send the response given"  # server: the one this input carries
    RESEND_RESPONSE = "resend the last response"
    PASS_UP = "hand the response to the user"  # client
    TIMED_OUT = "tell the user: no answer"
    TRANSPORT_FAILED = "tell the user: the transport failed"


class TransactionError(Exception):
    """Our own misuse: a response the server transaction's state does not allow."""


_C, _T, _P, _X, _F, _Z = State.CALLING, State.TRYING, State.PROCEEDING, State.COMPLETED, State.CONFIRMED, \
    State.TERMINATED
_ICT, _NICT, _IST, _NIST = Kind.INVITE_CLIENT, Kind.NON_INVITE_CLIENT, Kind.INVITE_SERVER, Kind.NON_INVITE_SERVER
_PASS, _SEND, _RESEND = (Action.PASS_UP,), (Action.SEND_RESPONSE,), (Action.RESEND_RESPONSE,)

TABLE: dict[tuple[Kind, State, Input], tuple[State, tuple[Action, ...]]] = {
    # INVITE client, §17.1.1 (figure 5)
    (_ICT, _C, Input.A): (_C, (Action.RESEND_REQUEST,)),
    (_ICT, _C, Input.B): (_Z, (Action.TIMED_OUT,)),
    (_ICT, _C, Input.TRANSPORT_ERROR): (_Z, (Action.TRANSPORT_FAILED,)),
    (_ICT, _C, Input.PROVISIONAL): (_P, _PASS),
    (_ICT, _C, Input.SUCCESS): (_Z, _PASS),
    (_ICT, _C, Input.FAILURE): (_X, (Action.SEND_ACK, Action.PASS_UP)),
    (_ICT, _P, Input.PROVISIONAL): (_P, _PASS),
    (_ICT, _P, Input.SUCCESS): (_Z, _PASS),
    (_ICT, _P, Input.FAILURE): (_X, (Action.SEND_ACK, Action.PASS_UP)),
    (_ICT, _X, Input.FAILURE): (_X, (Action.SEND_ACK,)),
    (_ICT, _X, Input.TRANSPORT_ERROR): (_Z, (Action.TRANSPORT_FAILED,)),
    (_ICT, _X, Input.D): (_Z, ()),
    # non-INVITE client, §17.1.2 (figure 6)
    (_NICT, _T, Input.E): (_T, (Action.RESEND_REQUEST,)),
    (_NICT, _T, Input.F): (_Z, (Action.TIMED_OUT,)),
    (_NICT, _T, Input.TRANSPORT_ERROR): (_Z, (Action.TRANSPORT_FAILED,)),
    (_NICT, _T, Input.PROVISIONAL): (_P, _PASS),
    (_NICT, _T, Input.SUCCESS): (_X, _PASS),
    (_NICT, _T, Input.FAILURE): (_X, _PASS),
    (_NICT, _P, Input.E): (_P, (Action.RESEND_REQUEST,)),
    (_NICT, _P, Input.F): (_Z, (Action.TIMED_OUT,)),
    (_NICT, _P, Input.TRANSPORT_ERROR): (_Z, (Action.TRANSPORT_FAILED,)),
    (_NICT, _P, Input.PROVISIONAL): (_P, _PASS),
    (_NICT, _P, Input.SUCCESS): (_X, _PASS),
    (_NICT, _P, Input.FAILURE): (_X, _PASS),
    (_NICT, _X, Input.K): (_Z, ()),
    # INVITE server, §17.2.1 (figure 7); the user sends 100 Trying on creation
    (_IST, _P, Input.REQUEST): (_P, _RESEND),
    (_IST, _P, Input.PROVISIONAL): (_P, _SEND),
    (_IST, _P, Input.SUCCESS): (_Z, _SEND),
    (_IST, _P, Input.FAILURE): (_X, _SEND),
    (_IST, _P, Input.TRANSPORT_ERROR): (_Z, (Action.TRANSPORT_FAILED,)),
    (_IST, _X, Input.REQUEST): (_X, _RESEND),
    (_IST, _X, Input.G): (_X, _RESEND),
    (_IST, _X, Input.ACK): (_F, ()),
    (_IST, _X, Input.H): (_Z, (Action.TIMED_OUT,)),
    (_IST, _X, Input.TRANSPORT_ERROR): (_Z, (Action.TRANSPORT_FAILED,)),
    (_IST, _F, Input.I): (_Z, ()),
    # non-INVITE server, §17.2.2 (figure 8)
    (_NIST, _T, Input.PROVISIONAL): (_P, _SEND),
    (_NIST, _T, Input.SUCCESS): (_X, _SEND),
    (_NIST, _T, Input.FAILURE): (_X, _SEND),
    (_NIST, _P, Input.REQUEST): (_P, _RESEND),
    (_NIST, _P, Input.PROVISIONAL): (_P, _SEND),
    (_NIST, _P, Input.SUCCESS): (_X, _SEND),
    (_NIST, _P, Input.FAILURE): (_X, _SEND),
    (_NIST, _P, Input.TRANSPORT_ERROR): (_Z, (Action.TRANSPORT_FAILED,)),
    (_NIST, _X, Input.REQUEST): (_X, _RESEND),
    (_NIST, _X, Input.TRANSPORT_ERROR): (_Z, (Action.TRANSPORT_FAILED,)),
    (_NIST, _X, Input.J): (_Z, ()),
}

_RESPONSES = (Input.PROVISIONAL, Input.SUCCESS, Input.FAILURE)


def response_input(status: int) -> Input:
    return Input.PROVISIONAL if status < 200 else Input.SUCCESS if status < 300 else Input.FAILURE


@dataclass(frozen=True)
class _Timer:
    first_ms: int
    reliable_ms: int | None  # None: not armed at all on a reliable transport
    doubles_to_ms: int | None = None  # a retransmission timer: doubled each time, up to this (0: no cap)


def _timers(kind: Kind, state: State) -> dict[Input, _Timer]:
    """The timers armed on entering `state` (§17's figures); any other timer stops."""
    sixty_four = 64 * T1_MS
    if kind is _ICT and state is _C:
        return {Input.A: _Timer(T1_MS, None, 0), Input.B: _Timer(sixty_four, sixty_four)}
    if kind is _ICT and state is _X:
        return {Input.D: _Timer(TIMER_D_UNRELIABLE_MS, 0)}
    if kind is _NICT and state is _T:
        return {Input.E: _Timer(T1_MS, None, T2_MS), Input.F: _Timer(sixty_four, sixty_four)}
    if kind is _NICT and state is _X:
        return {Input.K: _Timer(T4_MS, 0)}
    if kind is _IST and state is _X:
        return {Input.G: _Timer(T1_MS, None, T2_MS), Input.H: _Timer(sixty_four, sixty_four)}
    if kind is _IST and state is _F:
        return {Input.I: _Timer(T4_MS, 0)}
    if kind is _NIST and state is _X:
        return {Input.J: _Timer(sixty_four, 0)}
    return {}


@dataclass
class Transaction:
    """One transaction's state and timers. `fire` and `expire` return what to do."""

    kind: Kind
    reliable: bool
    state: State = field(init=False)
    _due: dict[Input, int] = field(default_factory=dict, init=False)  # timer -> deadline_ms
    _interval: dict[Input, tuple[int, int]] = field(default_factory=dict, init=False)  # (now, cap; 0: none)

    @classmethod
    def start(cls, kind: Kind, *, reliable: bool, now_ms: int) -> "Transaction":
        """A new transaction: a client's request has just been sent, a server's received."""
        t = cls(kind, reliable)
        t.state = {_ICT: _C, _NICT: _T, _IST: _P, _NIST: _T}[kind]
        t._enter(now_ms)
        return t

    @property
    def terminated(self) -> bool:
        return self.state is _Z

    def next_deadline_ms(self) -> int | None:
        return min(self._due.values(), default=None)

    def fire(self, event: Input, *, now_ms: int) -> tuple[Action, ...]:
        """Apply one input (a response, a retransmission, the ACK, a transport error)."""
        row = TABLE.get((self.kind, self.state, event))
        if row is None:
            if not self.kind.is_client and event in _RESPONSES:
                raise TransactionError(f"{self.kind.value} in {self.state.value} cannot send a {event.value}")
            return ()
        return self._apply(row, now_ms)

    def expire(self, *, now_ms: int) -> tuple[Action, ...]:
        """Fire every timer that is due; the actions in order."""
        actions: list[Action] = []
        for timer, deadline in sorted(self._due.items(), key=lambda item: item[1]):
            if deadline > now_ms or self._due.get(timer) != deadline:
                continue
            del self._due[timer]
            row = TABLE[(self.kind, self.state, timer)]
            if row[0] is self.state and timer in self._interval:  # a retransmission timer goes on
                self._rearm(timer, now_ms)
                actions += row[1]
                continue
            actions += self._apply(row, now_ms)
            if self.terminated:
                break
        return tuple(actions)

    def _apply(self, row: tuple[State, tuple[Action, ...]], now_ms: int) -> tuple[Action, ...]:
        state, actions = row
        if state is not self.state:
            self.state = state
            self._enter(now_ms)
            if self.kind is _NICT and state is _P and Input.E in self._due:
                self._interval[Input.E] = (T2_MS, T2_MS)  # §17.1.2.2: in Proceeding, E fires every T2
        if self._due and not self.terminated and min(self._due.values()) <= now_ms:
            actions = actions + self.expire(now_ms=now_ms)  # a zero timer on a reliable transport
        return actions

    def _enter(self, now_ms: int) -> None:
        armed = _timers(self.kind, self.state)
        if self.kind is _NICT and self.state is _P:
            return  # E and F go on from Trying
        self._due.clear()
        self._interval.clear()
        for timer, spec in armed.items():
            first = spec.reliable_ms if self.reliable else spec.first_ms
            if first is None:
                continue
            self._due[timer] = now_ms + first
            if spec.doubles_to_ms is not None and not self.reliable:
                self._interval[timer] = (first, spec.doubles_to_ms)

    def _rearm(self, timer: Input, now_ms: int) -> None:
        interval, cap = self._interval[timer]
        interval = min(interval * 2, cap) if cap else interval * 2
        self._interval[timer] = (interval, cap)
        self._due[timer] = now_ms + interval
