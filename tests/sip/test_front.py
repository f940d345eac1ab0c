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
    """A bare SIP endpoint for tests: sends bytes, collects the responses that come back."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)

    async def response(self, timeout: float = 3.0) -> SipResponse:
        msg = parse(await asyncio.wait_for(self.received.get(), timeout))
        assert isinstance(msg, SipResponse)
        return msg


@asynccontextmanager
async def front_on_overlay(**config: Any) -> AsyncIterator[tuple[SipFront, UdpDriver, Any, Endpoint, int]]:
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
    try:
        yield front, driver, transport, phone, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()
        for task in list(tasks):
            task.cancel()
        front.close()
        driver.close()


def request(method: str, uri: str, port: int, **kw: Any) -> bytes:
    return raw_request(method, uri, port, sender=f"sip:alice@{DOMAIN}", **kw)


def register(port: int, user: str, contact_port: int, expires: int = 60) -> bytes:
    return raw_register(port, user, contact_port, expires, domain=DOMAIN)


def test_register_stores_the_binding_in_the_overlay_and_expires_zero_removes_it():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, udp, phone, port):
            udp.sendto(register(port, "bob", port), ("127.0.0.1", front.port))
            ok = await phone.response()
            assert ok.status == 200 and ok.get("contact") == f"<sip:bob@127.0.0.1:{port}>;expires=60"
            stored = await driver.fetch(id_from_name(f"sip:bob@{DOMAIN}"), Kind.SIP_REGISTRATION)
            record = Registration.from_bytes(stored.entries[0].value)
            assert record.contact == f"sip:bob@127.0.0.1:{port}" and record.front == ("127.0.0.1", front.port)
            assert 55 <= stored.entries[0].lifetime_s <= 60
            udp.sendto(register(port, "bob", port, expires=0), ("127.0.0.1", front.port))
            assert (await phone.response()).status == 200
            gone = await driver.fetch(id_from_name(f"sip:bob@{DOMAIN}"), Kind.SIP_REGISTRATION)
            assert gone.entries == ()
    asyncio.run(main())


def test_a_request_to_a_registered_aor_reaches_its_contact_with_via_and_record_route():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, udp, phone, port):
            udp.sendto(register(port, "bob", port), ("127.0.0.1", front.port))
            assert (await phone.response()).status == 200
            udp.sendto(request("INVITE", f"sip:bob@{DOMAIN}", port), ("127.0.0.1", front.port))
            assert (await phone.response()).status == 100  # 100 Trying first, hop by hop
            forwarded = parse(await asyncio.wait_for(phone.received.get(), 3))
            assert forwarded.uri == f"sip:bob@127.0.0.1:{port}"  # Request-URI is now the contact
            vias = forwarded.get_all("via")
            assert len(vias) == 2 and f"127.0.0.1:{front.port};branch=z9hG4bK" in vias[0]
            assert forwarded.get("record-route") == f"<sip:127.0.0.1:{front.port};lr>"
            assert forwarded.max_forwards() == 69
    asyncio.run(main())


def test_unregistered_is_404_unreachable_is_480_and_options_is_answered():
    async def main() -> None:
        async with front_on_overlay(reach_timeout_s=0.3) as (front, driver, udp, phone, port):
            udp.sendto(request("INVITE", f"sip:nobody@{DOMAIN}", port), ("127.0.0.1", front.port))
            assert [(await phone.response()).status for _ in range(2)] == [100, 404]
            silent = await asyncio.get_running_loop().create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                               local_addr=("127.0.0.1", 0))
            silent_port = silent[0].get_extra_info("sockname")[1]
            udp.sendto(register(port, "carol", silent_port), ("127.0.0.1", front.port))
            assert (await phone.response()).status == 200
            udp.sendto(request("INVITE", f"sip:carol@{DOMAIN}", port), ("127.0.0.1", front.port))
            assert [(await phone.response()).status for _ in range(2)] == [100, 480]
            silent[0].close()
            udp.sendto(request("OPTIONS", f"sip:127.0.0.1:{front.port}", port), ("127.0.0.1", front.port))
            options = await phone.response()
            assert options.status == 200 and "INVITE" in (options.get("allow") or "")
    asyncio.run(main())


def test_max_forwards_zero_is_483_and_a_loop_is_482():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, udp, phone, port):
            front.config.gateways["loop.example"] = ("127.0.0.1", front.port)  # a gateway that is ourselves
            udp.sendto(request("MESSAGE", "sip:x@loop.example", port, forwards=0), ("127.0.0.1", front.port))
            assert (await phone.response()).status == 483
            udp.sendto(request("MESSAGE", "sip:x@loop.example", port), ("127.0.0.1", front.port))
            assert (await phone.response()).status == 482
    asyncio.run(main())


def test_register_over_tcp():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, udp, phone, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
            writer.write(b"\r\n\r\n" + register(port, "dave", port).replace(b"UDP", b"TCP"))
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
        async with front_on_overlay() as (front, driver, udp, phone, port):
            for raw in BROKEN:
                udp.sendto(raw, ("127.0.0.1", front.port))
            for raw in half_broken:
                udp.sendto(raw.replace(b"127.0.0.1:1;", f"127.0.0.1:{port};".encode()), ("127.0.0.1", front.port))
                assert (await phone.response()).status == 400
            udp.sendto(request("OPTIONS", f"sip:127.0.0.1:{front.port}", port), ("127.0.0.1", front.port))
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
        async with front_on_overlay(reach_timeout_s=0.05) as (front, driver, udp, phone, port):
            raw = request(method, f"sip:bob@{DOMAIN}", port, extra=f"Contact: <sip:bob@127.0.0.1:{port}>\r\n"
                                                                      f"Route: <sip:127.0.0.1:{front.port};lr>\r\n")
            for at, insert, cut in edits:
                raw = raw[:at] + insert + raw[at + cut:]
            front.receive(raw, Link("UDP", ("127.0.0.1", port)))
            await asyncio.sleep(0.01)
            assert front.counters["sip internal errors"] == 0
            probe = request("OPTIONS", f"sip:127.0.0.1:{front.port}", port, call_id="probe")
            udp.sendto(probe, ("127.0.0.1", front.port))
            while True:  # skip what the fuzzed request caused: its answers, or itself forwarded to us
                answer = parse(await asyncio.wait_for(phone.received.get(), 3))
                if isinstance(answer, SipResponse) and answer.get("call-id") == "probe@test":
                    break
            assert answer.status == 200
    asyncio.run(main())




def test_a_registration_that_is_not_refreshed_expires():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, udp, phone, port):
            udp.sendto(register(port, "erin", port, expires=1), ("127.0.0.1", front.port))
            assert (await phone.response()).status == 200
            aor = id_from_name(f"sip:erin@{DOMAIN}")
            assert len((await driver.fetch(aor, Kind.SIP_REGISTRATION)).entries) == 1
            await asyncio.sleep(1.2)
            assert (await driver.fetch(aor, Kind.SIP_REGISTRATION)).entries == ()
            udp.sendto(request("MESSAGE", f"sip:erin@{DOMAIN}", port, body=b"hi"), ("127.0.0.1", front.port))
            assert (await phone.response()).status == 202  # not online any more: kept for later
    asyncio.run(main())


def test_cancel_is_answered_and_follows_its_invite_downstream():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, udp, phone, port):
            udp.sendto(register(port, "bob", port), ("127.0.0.1", front.port))
            assert (await phone.response()).status == 200
            invite = request("INVITE", f"sip:bob@{DOMAIN}", port)
            udp.sendto(invite, ("127.0.0.1", front.port))
            assert (await phone.response()).status == 100
            forwarded = parse(await asyncio.wait_for(phone.received.get(), 3))  # we are Bob too: it rings here
            cancel = invite.replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")
            udp.sendto(cancel, ("127.0.0.1", front.port))
            seen = [parse(await asyncio.wait_for(phone.received.get(), 3)) for _ in range(2)]
            answer = next(m for m in seen if isinstance(m, SipResponse))
            onward = next(m for m in seen if not isinstance(m, SipResponse))
            assert answer.status == 200 and answer.get("cseq") == "1 CANCEL"
            assert onward.method == "CANCEL" and onward.get_all("via")[0] == forwarded.get_all("via")[0]
            stray = request("CANCEL", f"sip:bob@{DOMAIN}", port)  # no INVITE of that branch
            udp.sendto(stray, ("127.0.0.1", front.port))
            assert (await phone.response()).status == 481
    asyncio.run(main())


def test_a_flood_of_requests_stays_within_the_front_s_bounds():
    async def main() -> None:
        async with front_on_overlay() as (front, driver, udp, phone, port):
            link = Link("UDP", ("127.0.0.1", port))
            peak = 0
            for i in range(3000):  # bounded: 3,000 INVITEs for AORs nobody registered, no pause between
                front.receive(request("INVITE", f"sip:u{i}@{DOMAIN}", port), link)
                peak = max(peak, len(front._resolving))
            assert peak <= 1024
            await asyncio.sleep(0.5)
            probe = request("OPTIONS", f"sip:127.0.0.1:{front.port}", port, call_id="probe")
            udp.sendto(probe, ("127.0.0.1", front.port))
            while True:
                answer = parse(await asyncio.wait_for(phone.received.get(), 10))
                if isinstance(answer, SipResponse) and answer.get("call-id") == "probe@test":
                    break
            assert answer.status == 200 and front.counters["sip internal errors"] == 0
    asyncio.run(main())
