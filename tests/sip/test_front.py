"""The SIP front in-process, over real UDP/TCP sockets, on a real one-node overlay."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.core.ids import id_from_name
from peerphone.core.limits import Timing
from peerphone.core.peer import PeerConfig
from peerphone.core.usages import Kind, Registration
from peerphone.net.udp import UdpDriver, system_node_factory
from peerphone.sip.front import FrontConfig, Link, SipFront
from peerphone.sip.message import SipResponse, parse

from tests.sip.raw import register as raw_register
from tests.sip.raw import request as raw_request
from tests.sip.test_message import BROKEN

DOMAIN = "test.overlay"


class Endpoint(asyncio.DatagramProtocol):
    """A bare SIP endpoint for tests: sends bytes to the front, collects what comes back."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: Any = None
        self.front: tuple[str, int] = ("127.0.0.1", 0)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    @property
    def port(self) -> int:
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes) -> None:
        self.transport.sendto(data, self.front)

    async def register(self, user: str, contact_port: int | None = None, expires: int = 60) -> SipResponse:
        """REGISTER sip:USER (contact: us, or `contact_port`) and the front's answer, which must be 200."""
        self.send(raw_register(self.port, user, contact_port or self.port, expires, domain=DOMAIN))
        answer = await self.response()
        assert answer.status == 200, answer
        return answer

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)

    async def response(self, timeout: float = 3.0) -> SipResponse:
        msg = parse(await asyncio.wait_for(self.received.get(), timeout))
        assert isinstance(msg, SipResponse)
        return msg


@asynccontextmanager
async def front_on_overlay(**config: Any) -> AsyncIterator[tuple[SipFront, UdpDriver, Endpoint]]:
    loop = asyncio.get_running_loop()
    driver = await UdpDriver.open(("127.0.0.1", 0), system_node_factory(PeerConfig(1, Timing())))
    driver.join([])
    await driver.joined
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    assert driver.node is not None
    front = SipFront(FrontConfig(DOMAIN, driver.node.me.node_id, "127.0.0.1", **config), driver, spawn)
    driver.on_tunnel = front.receive_tunnelled
    await front.start("127.0.0.1", 0)
    transport, phone = await loop.create_datagram_endpoint(Endpoint, local_addr=("127.0.0.1", 0))
    phone.front = ("127.0.0.1", front.port)
    try:
        yield front, driver, phone
    finally:
        transport.close()
        for task in list(tasks):
            task.cancel()
        front.close()
        driver.close()


def request(method: str, uri: str, port: int, **kw: Any) -> bytes:
    return raw_request(method, uri, port, sender=f"sip:alice@{DOMAIN}", **kw)


def test_register_stores_the_binding_in_the_overlay_and_expires_zero_removes_it():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, phone):
            ok = await phone.register("bob")
            assert ok.get("contact") == f"<sip:bob@127.0.0.1:{phone.port}>;expires=60"
            stored = await driver.fetch(id_from_name(f"sip:bob@{DOMAIN}"), Kind.SIP_REGISTRATION)
            record = Registration.from_bytes(stored.entries[0].value)
            assert record.contact == f"sip:bob@127.0.0.1:{phone.port}" and record.front == ("127.0.0.1", front.port)
            assert 55 <= stored.entries[0].lifetime_s <= 60
            await phone.register("bob", expires=0)
            gone = await driver.fetch(id_from_name(f"sip:bob@{DOMAIN}"), Kind.SIP_REGISTRATION)
            assert gone.entries == ()
    asyncio.run(main())


def test_a_request_to_a_registered_aor_reaches_its_contact_with_via_and_record_route():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, phone):
            await phone.register("bob")
            phone.send(request("INVITE", f"sip:bob@{DOMAIN}", phone.port))
            assert (await phone.response()).status == 100  # 100 Trying first, hop by hop
            forwarded = parse(await asyncio.wait_for(phone.received.get(), 3))
            assert forwarded.uri == f"sip:bob@127.0.0.1:{phone.port}"  # Request-URI is now the contact
            vias = forwarded.get_all("via")
            assert len(vias) == 2 and f"127.0.0.1:{front.port};branch=z9hG4bK" in vias[0]
            assert forwarded.get("record-route") == f"<sip:127.0.0.1:{front.port};lr>"
            assert forwarded.max_forwards() == 69
    asyncio.run(main())


def test_unregistered_is_404_unreachable_is_480_and_options_is_answered():
    async def main() -> None:
        async with front_on_overlay(reach_timeout_s=0.3) as (front, driver, phone):
            phone.send(request("INVITE", f"sip:nobody@{DOMAIN}", phone.port))
            assert [(await phone.response()).status for _ in range(2)] == [100, 404]
            silent = await asyncio.get_running_loop().create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                               local_addr=("127.0.0.1", 0))
            silent_port = silent[0].get_extra_info("sockname")[1]
            await phone.register("carol", silent_port)
            phone.send(request("INVITE", f"sip:carol@{DOMAIN}", phone.port))
            assert [(await phone.response()).status for _ in range(2)] == [100, 480]
            silent[0].close()
            phone.send(request("OPTIONS", f"sip:127.0.0.1:{front.port}", phone.port))
            options = await phone.response()
            assert options.status == 200 and "INVITE" in (options.get("allow") or "")
    asyncio.run(main())


def test_max_forwards_zero_is_483_and_a_loop_is_482():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, phone):
            front.config.gateways["loop.example"] = ("127.0.0.1", front.port)  # a gateway that is ourselves
            phone.send(request("MESSAGE", "sip:x@loop.example", phone.port, forwards=0))
            assert (await phone.response()).status == 483
            phone.send(request("MESSAGE", "sip:x@loop.example", phone.port))
            assert (await phone.response()).status == 482
    asyncio.run(main())


def test_register_over_tcp():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, phone):
            reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
            over_tcp = raw_register(phone.port, "dave", phone.port, domain=DOMAIN).replace(b"UDP", b"TCP")
            writer.write(b"\r\n\r\n" + over_tcp)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"SIP/2.0 200 OK")
            writer.close()
    asyncio.run(main())


def test_broken_requests_are_answered_400_or_dropped_and_the_front_keeps_serving():
    half_broken = [  # parse, but are not requests a proxy can serve: answered 400
        request("INVITE", f"sip:bob@{DOMAIN}", 1).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
        request("INVITE", f"sip:bob@{DOMAIN}", 1).replace(b"Max-Forwards: 70", b"Max-Forwards: many"),
        request("INVITE", f"sip:bob@{DOMAIN}", 1).replace(b"Call-ID", b"X-Call-ID"),
        request("REGISTER", f"sip:{DOMAIN}", 1, to="nonsense"),
        request("INVITE", "sip:@@", 1),
    ]

    async def main() -> None:
        async with front_on_overlay() as (front, driver, phone):
            for raw in BROKEN:
                phone.send(raw)
            for raw in half_broken:
                phone.send(raw.replace(b"127.0.0.1:1;", f"127.0.0.1:{phone.port};".encode()))
                assert (await phone.response()).status == 400
            phone.send(request("OPTIONS", f"sip:127.0.0.1:{front.port}", phone.port))
            assert (await phone.response()).status == 200
            assert phone.received.empty()  # nothing answered the unparseable ones
            assert front.counters["sip dropped: unparseable"] == len(BROKEN) - 1  # b"" is a keepalive
            assert front.counters["sip internal errors"] == 0
    asyncio.run(main())


mangle_at = st.integers(0, 400)


@settings(max_examples=400)
@given(st.lists(st.tuples(mangle_at, st.binary(min_size=0, max_size=12), st.integers(0, 12)), max_size=3),
       st.sampled_from(["INVITE", "REGISTER", "MESSAGE", "CANCEL", "ACK", "BYE", "OPTIONS", "SUBSCRIBE"]))
def test_fuzzed_requests_never_break_the_front(edits, method):
    async def main() -> None:
        async with front_on_overlay(reach_timeout_s=0.05) as (front, driver, phone):
            raw = request(method, f"sip:bob@{DOMAIN}", phone.port,
                          extra=f"Contact: <sip:bob@127.0.0.1:{phone.port}>\r\n"
                                f"Route: <sip:127.0.0.1:{front.port};lr>\r\n")
            for at, insert, cut in edits:
                raw = raw[:at] + insert + raw[at + cut:]
            front.receive(raw, Link("UDP", ("127.0.0.1", phone.port)))
            await asyncio.sleep(0.01)
            assert front.counters["sip internal errors"] == 0
            probe = request("OPTIONS", f"sip:127.0.0.1:{front.port}", phone.port, call_id="probe")
            phone.send(probe)
            while True:  # skip what the fuzzed request caused: its answers, or itself forwarded to us
                answer = parse(await asyncio.wait_for(phone.received.get(), 3))
                if isinstance(answer, SipResponse) and answer.get("call-id") == "probe@test":
                    break
            assert answer.status == 200
    asyncio.run(main())




def test_a_registration_that_is_not_refreshed_expires():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, phone):
            await phone.register("erin", expires=2)
            aor = id_from_name(f"sip:erin@{DOMAIN}")
            assert len((await driver.fetch(aor, Kind.SIP_REGISTRATION)).entries) == 1
            await asyncio.sleep(2.3)  # past its lifetime; the check before ran well within it
            assert (await driver.fetch(aor, Kind.SIP_REGISTRATION)).entries == ()
            phone.send(request("MESSAGE", f"sip:erin@{DOMAIN}", phone.port, body=b"hi"))
            assert (await phone.response()).status == 202  # not online any more: kept for later
    asyncio.run(main())


def test_cancel_is_answered_and_follows_its_invite_downstream():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, phone):
            await phone.register("bob")
            invite = request("INVITE", f"sip:bob@{DOMAIN}", phone.port)
            phone.send(invite)
            assert (await phone.response()).status == 100
            forwarded = parse(await asyncio.wait_for(phone.received.get(), 3))  # we are Bob too: it rings here
            cancel = invite.replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")
            phone.send(cancel)
            seen = [parse(await asyncio.wait_for(phone.received.get(), 3)) for _ in range(2)]
            answer = next(m for m in seen if isinstance(m, SipResponse))
            onward = next(m for m in seen if not isinstance(m, SipResponse))
            assert answer.status == 200 and answer.get("cseq") == "1 CANCEL"
            assert onward.method == "CANCEL" and onward.get_all("via")[0] == forwarded.get_all("via")[0]
            stray = request("CANCEL", f"sip:bob@{DOMAIN}", phone.port)  # no INVITE of that branch
            phone.send(stray)
            assert (await phone.response()).status == 481
    asyncio.run(main())


def test_a_flood_of_requests_stays_within_the_front_s_bounds():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, phone):
            link = Link("UDP", ("127.0.0.1", phone.port))
            peak = 0
            for i in range(3000):  # bounded: 3,000 INVITEs for AORs nobody registered, no pause between
                front.receive(request("INVITE", f"sip:u{i}@{DOMAIN}", phone.port), link)
                peak = max(peak, len(front._resolving))
            assert peak <= 1024
            await asyncio.sleep(0.5)
            probe = request("OPTIONS", f"sip:127.0.0.1:{front.port}", phone.port, call_id="probe")
            phone.send(probe)
            while True:
                answer = parse(await asyncio.wait_for(phone.received.get(), 10))
                if isinstance(answer, SipResponse) and answer.get("call-id") == "probe@test":
                    break
            assert answer.status == 200 and front.counters["sip internal errors"] == 0
    asyncio.run(main())
