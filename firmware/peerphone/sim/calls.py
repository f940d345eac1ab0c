"""Calls in the simulator: SIP fronts on the simulated nodes, phones at random fronts.

Every peer (and, in battery runs, every handset, client or peer) hosts the very
`SipFront` the UDP transport drives, on the node's own simulated host (port 5060), its
overlay requests started on the node's `PeerNode`, the node's tunnelled payloads and
attachments handed to it.
A `SimPhone` is a minimal sans-I/O user agent on a host of its own: it registers
two contacts, each through a random front, and refreshes them, keeps its fronts
alive with OPTIONS and moves a contact to another front when its front stops
answering (a real phone with several outbound proxies does the same), calls by
AOR, answers (180 at once, 200 after a ring), and hangs up. Its requests run on
the same RFC 3261 transactions as the front.
Every datagram crosses the simulator's network, with its latency, loss and
partitions; a front dies with its peer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

from ..core.events import Attached, Event, Joined, NodeFailed, RequestCompleted, Tunnelled
from ..core.peer import PeerNode, State
from ..core.wire.messages import Addr
from ..sip.front import FrontConfig, Link, SipFront, ack_for_failure
from ..sip.message import SipParseError, SipRequest, SipResponse, parse
from ..sip.transaction import T1_MS, T2_MS, Action, Transaction, response_input
from ..sip.transaction import Kind as TxKind
from ..sip.uri import NameAddr, Via
from .engine import Simulation

SIP_PORT = 5060
DOMAIN = "sim.overlay"
REGISTER_EXPIRES_S = 600
KEEPALIVE_MS = 5000        # OPTIONS to the front; answered, or the phone moves
FRONT_SILENT_MS = 2000     # no answer to an INVITE or OPTIONS within this: the front is gone
SILENT_REGISTRAR_MS = 8000  # a REGISTER waits for the overlay's store before its answer
RING_MS = 2000             # the callee answers after ringing this long
HOLD_MS = 20_000           # the caller hangs up after this
CALL_GIVE_UP_MS = 32_000   # no 180 by then: the call failed (timeout)
LINES = 2  # a phone registers through this many fronts at once (two contacts), so one may fail


@dataclass
class CallOutcome:
    """One call's fate, as the caller's phone saw it."""

    started_ms: int
    ringing_ms: int | None = None  # INVITE sent to 180 received
    failure: str | None = None
    ended: bool = False


@dataclass(eq=False)
class _Pending:
    """A request the phone sent: its transaction, bytes and what to do with the answer."""

    txn: Transaction
    request: SipRequest
    data: bytes
    front: Addr
    on_response: Callable[[SipResponse, int], None]
    on_silence: Callable[[int], None]
    silent_at_ms: int  # the front must have answered something by then
    heard: bool = False
    timer_ms: int | None = None


@dataclass
class _Dialog:
    call_id: str
    local_tag: str
    remote: str  # the far end's To, with its tag
    target: str  # the far end's contact
    routes: list[str]


class SimPhone:
    def __init__(self, world: "CallWorld", user: str, addr: Addr, rng: random.Random) -> None:
        self.world = world
        self.aor = f"sip:{user}@{DOMAIN}"
        self.user = user
        self.addr = addr
        self.rng = rng
        self.fronts: list[Addr | None] = [None] * LINES
        self._registered = [False] * LINES
        self.moves = 0
        self._pending: dict[str, _Pending] = {}
        self._answered: dict[tuple[str, str], bytes] = {}  # (their branch, method) -> our final answer
        self._calls: dict[str, tuple[CallOutcome, _Dialog | None]] = {}  # ours, by Call-ID
        self._acked: set[str] = set()  # Call-IDs of calls we answered whose ACK has come

    # -- helpers --

    def _token(self, n: int = 8) -> str:
        return self.rng.getrandbits(8 * n).to_bytes(n, "big").hex()

    def _later(self, ms: int, fn: Callable[[], None]) -> None:
        self.world.sim.call_at(self.world.sim.now_ms + ms, fn)

    def _send(self, data: bytes, to: Addr) -> None:
        self.world.send(self.addr, to, data)

    def _request(self, method: str, uri: str, to: str, *, call_id: str, cseq: int, from_tag: str,
                 routes: Sequence[str] = (), extra: Sequence[tuple[str, str]] = ()) -> SipRequest:
        return SipRequest(method=method, uri=uri, body=b"", headers=[
            ("Via", f"SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};rport;branch=z9hG4bK{self._token()}"),
            ("Max-Forwards", "70"), ("From", f"<{self.aor}>;tag={from_tag}"), ("To", to),
            ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"), *[("Route", r) for r in routes], *extra])

    def _start(self, req: SipRequest, front: Addr, on_response: Callable[[SipResponse, int], None],
               on_silence: Callable[[int], None], now_ms: int, *, watch_front: bool = True) -> None:
        """Send `req` on a client transaction. `watch_front`: a front that answers nothing soon
        is taken for gone (no 100 comes for a BYE: one in a dialog waits for its transaction's
        timeout, as a tunnelled path can take longer than FRONT_SILENT_MS)."""
        kind = TxKind.INVITE_CLIENT if req.method == "INVITE" else TxKind.NON_INVITE_CLIENT
        silent_ms = SILENT_REGISTRAR_MS if req.method == "REGISTER" else FRONT_SILENT_MS
        pending = _Pending(Transaction.start(kind, reliable=False, now_ms=now_ms), req, req.to_bytes(), front,
                           on_response, on_silence, now_ms + silent_ms, heard=not watch_front)
        branch = Via.parse(req.get_all("via")[0]).branch or ""
        self._pending[branch] = pending
        self._send(pending.data, front)
        self._arm(branch, pending)

    def _arm(self, branch: str, pending: _Pending) -> None:
        if pending.txn.terminated:
            self._pending.pop(branch, None)
            return
        deadlines = [d for d in (pending.txn.next_deadline_ms(), None if pending.heard else pending.silent_at_ms)
                     if d is not None]
        at = min(deadlines) if deadlines else None
        if at is not None and at != pending.timer_ms:
            pending.timer_ms = at
            self.world.sim.call_at(at, partial(self._on_timer, branch, pending, at))

    def _on_timer(self, branch: str, pending: _Pending, at: int) -> None:
        if self._pending.get(branch) is not pending or pending.timer_ms != at:
            return  # done, or a timer that has moved
        pending.timer_ms = None
        now = self.world.sim.now_ms
        if not pending.heard and pending.silent_at_ms <= now:
            del self._pending[branch]
            pending.on_silence(now)
            return
        for action in pending.txn.expire(now_ms=now):
            if action is Action.RESEND_REQUEST:
                self._send(pending.data, pending.front)
            elif action is Action.TIMED_OUT:
                del self._pending[branch]
                pending.on_silence(now)
                return
        self._arm(branch, pending)

    # -- registration, keepalive, moving to another front --

    @property
    def front(self) -> Addr | None:
        """The front calls go out through: the first line's, else the other's."""
        return next((f for f in self.fronts if f is not None), None)

    @property
    def registered(self) -> bool:
        return all(self._registered)

    def start(self, now_ms: int) -> None:
        for line in range(len(self.fronts)):
            self._move(line, now_ms)
        self._later(self.rng.randrange(KEEPALIVE_MS), self._keepalive)

    def _move(self, line: int, now_ms: int) -> None:
        """Register `line` at a front none of our lines uses: a new one when its own is gone."""
        front = self.world.random_front(avoid=self.fronts)
        if front is None:
            self._later(FRONT_SILENT_MS, lambda: self._move(line, self.world.sim.now_ms))
            return
        if self.fronts[line] is not None:
            self.moves += 1
        self.fronts[line] = front
        self._register(line, now_ms)

    def _register(self, line: int, now_ms: int) -> None:
        front = self.fronts[line]
        assert front is not None
        req = self._request("REGISTER", f"sip:{DOMAIN}", f"<{self.aor}>", call_id=f"reg-{self.user}-{line}",
                            cseq=1, from_tag=self._token(4), extra=[
                                ("Contact", f"<sip:{self.user}@{self.addr[0]}:{self.addr[1]};line={line}>"),
                                ("Expires", str(REGISTER_EXPIRES_S))])

        def answered(resp: SipResponse, now_ms: int) -> None:
            if resp.status >= 200 and self.fronts[line] == front:
                self._registered[line] = resp.status == 200
                self._later(REGISTER_EXPIRES_S * 500 if resp.status == 200 else FRONT_SILENT_MS,
                            lambda: self._refresh(line, front))

        self._start(req, front, answered, lambda now: self._front_gone(front, now), now_ms)

    def _refresh(self, line: int, front: Addr) -> None:
        if self.fronts[line] == front:
            self._register(line, self.world.sim.now_ms)

    def _keepalive(self) -> None:
        now = self.world.sim.now_ms
        self._later(KEEPALIVE_MS, self._keepalive)
        for front in self.fronts:
            if front is None:
                continue
            req = self._request("OPTIONS", f"sip:{front[0]}:{front[1]}", f"<sip:{front[0]}:{front[1]}>",
                                call_id=f"ka-{self._token()}", cseq=1, from_tag=self._token(4))
            self._start(req, front, lambda resp, now: None, partial(self._front_gone, front), now)

    def _front_gone(self, front: Addr, now_ms: int) -> None:
        for line, used in enumerate(self.fronts):
            if used == front:
                self._registered[line] = False
                self._move(line, now_ms)

    # -- calls out --

    def call(self, callee: str, outcome: CallOutcome) -> None:
        now = self.world.sim.now_ms
        call_id = f"call-{self._token()}"
        self._calls[call_id] = (outcome, None)
        self._invite(callee, call_id, self._token(4), outcome, now)
        self._later(CALL_GIVE_UP_MS, partial(self._give_up, call_id, outcome))

    def _give_up(self, call_id: str, outcome: CallOutcome) -> None:
        if outcome.ringing_ms is None and outcome.failure is None:
            outcome.failure = "no 180 within 32 s"
        if self._calls.get(call_id, (None, None))[1] is None:
            self._calls.pop(call_id, None)

    def _invite(self, callee: str, call_id: str, tag: str, outcome: CallOutcome, now_ms: int) -> None:
        """INVITE through our front; one that does not answer at all is left for another (RFC 3263 §4.3)."""
        if self.front is None:
            outcome.failure = outcome.failure or "no front"
            return
        front = self.front
        req = self._request("INVITE", callee, f"<{callee}>", call_id=call_id, cseq=1, from_tag=tag,
                            extra=[("Contact", f"<sip:{self.user}@{self.addr[0]}:{self.addr[1]}>")])

        def silent(now: int) -> None:
            self._front_gone(front, now)
            if outcome.ringing_ms is None and outcome.failure is None:
                self._invite(callee, call_id, tag, outcome, now)

        self._start(req, front, partial(self._invite_answered, callee, call_id, outcome), silent, now_ms)

    def _invite_answered(self, callee: str, call_id: str, outcome: CallOutcome, resp: SipResponse,
                         now_ms: int) -> None:
        if resp.status == 180 and outcome.ringing_ms is None and outcome.failure is None:
            outcome.ringing_ms = now_ms - outcome.started_ms
        elif resp.status >= 300 and outcome.ringing_ms is None and outcome.failure is None:
            outcome.failure = f"{resp.status} {resp.reason}"
        elif 200 <= resp.status < 300:
            self._confirm(call_id, outcome, resp, now_ms)

    def _confirm(self, call_id: str, outcome: CallOutcome, resp: SipResponse, now_ms: int) -> None:
        """ACK the 2xx along its route set (§13.2.2.4), and hang up after the hold time."""
        contact = resp.get("contact")
        if contact is None or self._calls.get(call_id, (None, None))[1] is not None:
            return
        to = resp.get("to") or ""
        dialog = _Dialog(call_id, NameAddr.parse(resp.get("from") or "").param("tag") or "", to,
                         str(NameAddr.parse(contact).uri), list(reversed(resp.get_all("record-route"))))
        self._calls[call_id] = (outcome, dialog)
        self._in_dialog("ACK", dialog, now_ms, cseq=1)
        self._later(HOLD_MS, partial(self._hang_up, call_id))

    def _in_dialog(self, method: str, dialog: _Dialog, now_ms: int, *, cseq: int,
                   on_response: Callable[[SipResponse, int], None] | None = None) -> None:
        req = self._request(method, dialog.target, dialog.remote, call_id=dialog.call_id, cseq=cseq,
                            from_tag=dialog.local_tag, routes=dialog.routes)
        first = NameAddr.parse(dialog.routes[0]).uri if dialog.routes else NameAddr.parse(dialog.target).uri
        hop = (first.host, first.port or SIP_PORT)
        if method == "ACK":
            self._send(req.to_bytes(), hop)
        else:
            self._start(req, hop, on_response or (lambda r, n: None), lambda now: None, now_ms, watch_front=False)

    def _hang_up(self, call_id: str) -> None:
        outcome, dialog = self._calls.pop(call_id, (None, None))
        if outcome is None or dialog is None:
            return

        def answered(resp: SipResponse, now_ms: int) -> None:
            if resp.status >= 200:
                outcome.ended = 200 <= resp.status < 300

        self._in_dialog("BYE", dialog, self.world.sim.now_ms, cseq=2, on_response=answered)

    # -- what arrives --

    def receive(self, data: bytes, src: Addr, now_ms: int) -> None:
        try:
            message = parse(data)
            if isinstance(message, SipResponse):
                self._on_response(message, now_ms)
            else:
                self._on_request(message, src, now_ms)
        except SipParseError:
            self.world.counters["phone: unparseable"] += 1

    def _on_response(self, resp: SipResponse, now_ms: int) -> None:
        branch = Via.parse(resp.get_all("via")[0]).branch or ""
        pending = self._pending.get(branch)
        if pending is None:
            if 200 <= resp.status < 300 and resp.cseq()[1] == "INVITE":  # a 2xx retransmission: ACK again
                call = self._calls.get(resp.get("call-id") or "")
                if call is not None and call[1] is not None:
                    self._in_dialog("ACK", call[1], now_ms, cseq=1)
            return
        pending.heard = True
        for action in pending.txn.fire(response_input(resp.status), now_ms=now_ms):
            if action is Action.PASS_UP:
                pending.on_response(resp, now_ms)
            elif action is Action.SEND_ACK:
                self._send(ack_for_failure(pending.request, resp), pending.front)
        self._arm(branch, pending)

    def _on_request(self, req: SipRequest, src: Addr, now_ms: int) -> None:
        via = Via.parse(req.get_all("via")[0])
        key = (via.branch or "", req.method)
        reply_to = via.reply_to()
        if req.method == "ACK":
            self._acked.add(req.get("call-id") or "")
            return
        if key in self._answered:
            self._send(self._answered[key], reply_to)
            return
        if req.method == "INVITE":
            tag = self._token(4)
            self._answered[key] = self._answer(req, 180, "Ringing", tag)  # until the 200 replaces it
            self._send(self._answered[key], reply_to)
            ok = self._answer(req, 200, "OK", tag)
            stop = now_ms + RING_MS + 64 * T1_MS
            self._later(RING_MS, partial(self._answered.__setitem__, key, ok))
            self._later(RING_MS, partial(self._send_ok, ok, reply_to, req.get("call-id") or "", T1_MS, stop))
        else:
            self._answered[key] = self._answer(req, 200, "OK", self._token(4))
            self._send(self._answered[key], reply_to)
        self._later(RING_MS + 64 * T1_MS, partial(self._forget_answer, key))

    def _forget_answer(self, key: tuple[str, str]) -> None:
        self._answered.pop(key, None)

    def _send_ok(self, ok: bytes, to: Addr, call_id: str, interval_ms: int, stop_ms: int) -> None:
        """The 2xx is the UAS's to repeat until the ACK comes (§13.3.1.4)."""
        if call_id in self._acked or self.world.sim.now_ms >= stop_ms:
            self._acked.discard(call_id)
            return
        self._send(ok, to)
        self._later(interval_ms, partial(self._send_ok, ok, to, call_id, min(interval_ms * 2, T2_MS), stop_ms))

    def _answer(self, req: SipRequest, status: int, reason: str, tag: str) -> bytes:
        resp = SipResponse(status=status, reason=reason)
        for name in ("via", "record-route", "from", "to", "call-id", "cseq"):
            for value in req.get_all(name) if name in ("via", "record-route") else [req.get(name) or ""]:
                if name == "to" and ";tag=" not in value:
                    value = f"{value};tag={tag}"
                resp.headers.append((name.title(), value))
        resp.headers.append(("Contact", f"<sip:{self.user}@{self.addr[0]}:{self.addr[1]}>"))
        return resp.to_bytes()


class SimFront:
    """The SIP front of one simulated node, on the simulator's clock. It stays through the
    node's role changes (as the phone's front does): a client's front is reached through
    its admitting peer."""

    def __init__(self, world: "CallWorld", node: PeerNode, rng: random.Random) -> None:
        self.world = world
        self.node_addr = node.me.addr
        self.addr: Addr = (node.me.addr[0], SIP_PORT)
        admitting = node.admitting_peer
        self.front = SipFront(FrontConfig(DOMAIN, node.me.node_id, node.me.addr[0], SIP_PORT,
                                          admitting=admitting.node_id if admitting else None),
                              entropy=rng.randbytes, now_ms=world.sim.now_ms)
        self._timer_ms: int | None = None

    @property
    def node(self) -> PeerNode:
        """The node now at our address: a role change makes a new one (Simulation.become)."""
        return self.world.sim.nodes[self.node_addr]

    @property
    def live(self) -> bool:
        return self.world.sim.is_running(self.node_addr)

    def node_event(self, event: Event) -> None:
        now = self.world.sim.now_ms
        if isinstance(event, Tunnelled):
            self.front.receive_tunnelled(event.origin, event.payload, via=event.via, now_ms=now)
        elif isinstance(event, Attached):
            self.front.reached_through(event.peer_id, now_ms=now)
        elif isinstance(event, Joined) and not self.node.config.client:
            self.front.reached_through(None, now_ms=now)
        elif isinstance(event, NodeFailed):
            self.front.overlay_changed(now_ms=now)
        self.pump()

    def receive(self, data: bytes, src: Addr, now_ms: int) -> None:
        self.front.receive(data, Link("UDP", src), now_ms=now_ms)
        self.pump()

    def pump(self) -> None:
        sim, front = self.world.sim, self.front
        for data, link in front.messages_to_send():
            self.world.send(self.addr, link.addr, data)
        for request in front.overlay_requests():
            sim.request(self.node, request.start, partial(self._completed, request.handle))
        front.events()  # the report counts outcomes at the phones
        deadline = front.next_deadline_ms()
        if deadline is not None and deadline != self._timer_ms:
            self._timer_ms = deadline
            sim.call_at(deadline, partial(self._on_timer, deadline))

    def _completed(self, handle: int, done: RequestCompleted) -> None:
        if self.live:
            self.front.overlay_completed(handle, done, now_ms=self.world.sim.now_ms)
            self.pump()

    def _on_timer(self, at: int) -> None:
        if self._timer_ms != at or not self.live:
            return
        self._timer_ms = None
        self.front.handle_timer(now_ms=self.world.sim.now_ms)
        self.pump()


@dataclass
class CallWorld:
    """Fronts on every live peer, phones on hosts of their own, and the datagrams between them."""

    sim: Simulation
    fronts: dict[Addr, SimFront] = field(default_factory=dict)  # by the front's address
    phones: dict[Addr, SimPhone] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sim.on_event = self._node_event

    def add_front(self, node: PeerNode) -> SimFront:
        front = SimFront(self, node, random.Random(self.sim.rng.getrandbits(64)))
        self.sim.network.alias(front.addr, node.me.addr)
        self.fronts[front.addr] = front
        front.pump()
        return front

    def _node_event(self, node_addr: Addr, event: Event) -> None:
        front = self.fronts.get((node_addr[0], SIP_PORT))
        if front is not None and front.live:
            front.node_event(event)

    def add_phone(self, index: int) -> None:
        addr: Addr = (f"172.{16 + (index >> 16 & 15)}.{index >> 8 & 255}.{index & 255}", SIP_PORT)
        phone = SimPhone(self, f"u{index}", addr, random.Random(self.sim.rng.getrandbits(64)))
        self.sim.network.add_host(addr)
        self.phones[addr] = phone
        phone.start(self.sim.now_ms)

    def random_front(self, avoid: Sequence[Addr | None] = ()) -> Addr | None:
        """The front of a random joined node (none in `avoid`), as a phone's next outbound proxy:
        a peer's, or a battery handset's that is a client now."""
        for _ in range(8):
            node = self.sim.random_running()
            addr = (node.me.addr[0], SIP_PORT)
            if addr not in avoid and addr in self.fronts and node.state is State.JOINED:
                return addr
        return None

    def send(self, src: Addr, dst: Addr, data: bytes) -> None:
        self.sim.datagrams += 1
        if dst not in self.fronts and dst not in self.phones:
            return
        for at_ms in self.sim.network.deliveries(src, dst, self.sim.now_ms):
            self.sim.call_at(at_ms, partial(self._deliver, dst, data, src))

    def _deliver(self, dst: Addr, data: bytes, src: Addr) -> None:
        now = self.sim.now_ms
        front = self.fronts.get(dst)
        if front is not None:
            if front.live:
                front.receive(data, src, now)
            return
        self.phones[dst].receive(data, src, now)
