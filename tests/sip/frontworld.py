"""A SIP front on a real one-node overlay, both sans-I/O on one virtual clock: no loop, no socket.

The overlay is a real `PeerNode` in `tests.ring.Ring`; the front's overlay
requests are started on it and its completions fed back, as the transport does.
Phones are addresses: what the front sends is collected, parsed, in order.
"""

from __future__ import annotations

import random
from typing import Any

from peerphone.core.events import RequestCompleted
from peerphone.core.ids import id_from_name
from peerphone.core.names import NameTicket, issue_ticket
from peerphone.core.wire.messages import FetchAns
from peerphone.sip.front import FrontConfig, Link, OverlayRequest, SipFront
from peerphone.sip.message import SipMessage, SipRequest, SipResponse, parse

from tests.ring import Ring
from tests.sip.raw import register as raw_register
from tests.sip.raw import request as raw_request

DOMAIN = "test.overlay"
FRONT_PORT = 5070
PHONE = 40000


class FrontWorld:
    def __init__(self, advertise_host: str = "127.0.0.1", enrolled: bool = False, **config: Any) -> None:
        self.ring = Ring(seed=3, enrolled=enrolled)
        self.node = self.ring.add()
        self.ring.run(10)
        if enrolled:  # the authority named our node for these
            assert self.ring.authority is not None
            key = self.node.identity.public_key
            config["tickets"] = {aor: NameTicket(key, issue_ticket(self.ring.authority, aor, key))
                                 for aor in config.pop("names", ())}
        self.front = SipFront(FrontConfig(DOMAIN, self.node.me.node_id, advertise_host, FRONT_PORT, **config),
                              entropy=random.Random(5).randbytes, now_ms=self.now_ms)
        self.sent: list[tuple[SipMessage, Link]] = []
        self.overlay_paused = False
        self.held: list[OverlayRequest] = []
        self.overlay_started: list[OverlayRequest] = []
        self._waiting: dict[int, int] = {}  # node handle -> front handle
        self._events_seen = len(self.ring.events)
        self._pump()

    @property
    def now_ms(self) -> int:
        return self.ring.now_ms

    # -- into the front --

    def send(self, data: bytes, port: int = PHONE, transport: str = "UDP", host: str = "127.0.0.1",
             node_id: int = 0) -> None:
        """`data` from `host`:`port`; `node_id`: the node the far end proved to be (TLS, TUNNEL)."""
        self.front.receive(data, Link(transport, (host, port), node_id), now_ms=self.now_ms)
        self._pump()

    def advance(self, ms: int) -> None:
        """Move the clock by `ms`, firing the front's and the overlay's timers on time."""
        end = self.now_ms + ms
        while True:
            deadline = self.front.next_deadline_ms()
            if deadline is None or deadline > end:
                self.ring.step_until(end)
                self._pump()
                deadline = self.front.next_deadline_ms()
                if deadline is None or deadline > end:
                    return
                continue
            self.ring.step_until(max(deadline, self.now_ms))
            self._pump()
            self.front.handle_timer(now_ms=self.now_ms)
            self._pump()

    def resume_overlay(self) -> None:
        self.overlay_paused = False
        self._pump()

    # -- out of the front --

    def _pump(self) -> None:
        while True:
            busy = False
            for data, link in self.front.messages_to_send():
                self.sent.append((parse(data), link))
            self.held += self.front.overlay_requests()
            if not self.overlay_paused:
                for request in self.held:
                    self.overlay_started.append(request)
                    self._waiting[request.start(self.node, self.now_ms)] = request.handle
                    busy = True
                self.held = []
                self.ring.flush(self.node)
                self.ring.run(0)
            for _, event in self.ring.events[self._events_seen:]:
                self._events_seen += 1
                if isinstance(event, RequestCompleted) and event.handle in self._waiting:
                    self.front.overlay_completed(self._waiting.pop(event.handle), event, now_ms=self.now_ms)
                    busy = True
            if not busy:
                return

    def take(self) -> list[tuple[SipMessage, Link]]:
        out, self.sent = self.sent, []
        return out

    def responses(self) -> list[SipResponse]:
        return [m for m, _ in self.take() if isinstance(m, SipResponse)]

    def statuses(self) -> list[int]:
        return [r.status for r in self.responses()]

    def requests(self) -> list[tuple[SipRequest, Link]]:
        return [(m, link) for m, link in self.take() if isinstance(m, SipRequest)]

    # -- the overlay, read directly --

    def fetch(self, aor: str, kind: int) -> FetchAns:
        handle = self.node.fetch(id_from_name(aor), kind, now_ms=self.now_ms)
        self.ring.flush(self.node)
        self.ring.run(0)
        done = next(e for _, e in self.ring.events if isinstance(e, RequestCompleted) and e.handle == handle)
        assert isinstance(done.answer, FetchAns)
        return done.answer

    # -- phones --

    def register(self, user: str, port: int = PHONE, expires: int = 60, extra_param: str = "") -> SipResponse:
        data = raw_register(port, user, port, expires, domain=DOMAIN)
        if extra_param:
            data = data.replace(f":{port}>\r\n".encode(), f":{port}>{extra_param}\r\n".encode())
        self.send(data, port)
        sent = self.take()
        answers = [m for m, _ in sent if isinstance(m, SipResponse)]
        assert [a.status for a in answers] == [200], answers
        self.sent = [(m, link) for m, link in sent if not isinstance(m, SipResponse)]  # offline messages, say
        return answers[0]


def request(method: str, uri: str, port: int = PHONE, **kw: Any) -> bytes:
    return raw_request(method, uri, port, sender=f"sip:alice@{DOMAIN}", **kw)


def answer(req: SipRequest, status: int, reason: str = "OK", tag: str = "b0b") -> bytes:
    """What a UA answers to `req` (§8.2.6): its Vias, From, To with a tag, Call-ID, CSeq."""
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in req.get_all("via")]
    to = req.get("to") or ""
    lines += [f"From: {req.get('from')}", f"To: {to};tag={tag}" if status > 100 and ";tag=" not in to else f"To: {to}",
              f"Call-ID: {req.get('call-id')}", f"CSeq: {req.get('cseq')}", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
