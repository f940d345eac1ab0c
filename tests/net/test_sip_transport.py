"""The SIP front's transport on real sockets: UDP and TCP on one port, stream framing, failures."""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.core.ids import id_from_name
from peerphone.core.limits import Timing
from peerphone.core.peer import PeerConfig
from peerphone.core.usages import Kind
from peerphone.net.sip_transport import FramingError, SipTransport, StreamFramer
from peerphone.net.udp import UdpDriver
from peerphone.sip.front import FrontConfig
from peerphone.sip.message import BODY_BYTES_MAX, MESSAGE_BYTES_MAX, SipResponse, parse

from tests.net import node_factory
from tests.sip.raw import free_port
from tests.sip.raw import register as raw_register
from tests.sip.raw import request as raw_request

DOMAIN = "test.overlay"


def test_the_framer_cuts_a_stream_into_messages_wherever_it_is_split():
    one = raw_request("MESSAGE", f"sip:a@{DOMAIN}", 1, body=b"hello")
    two = raw_request("OPTIONS", f"sip:{DOMAIN}", 1)
    stream = b"\r\n\r\n" + one + b"\r\n" + two  # keepalives before and between
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        assert framer.feed(stream[:cut]) + framer.feed(stream[cut:]) == [one, two]


@pytest.mark.parametrize("bad", [
    b"MESSAGE sip:a SIP/2.0\r\nContent-Length: x\r\n\r\n",
    b"MESSAGE sip:a SIP/2.0\r\nContent-Length: " + str(BODY_BYTES_MAX + 1).encode() + b"\r\n\r\n",
    b"MESSAGE sip:a SIP/2.0\r\nX: " + b"y" * 20_000,
])
def test_the_framer_refuses_what_it_cannot_bound(bad):
    with pytest.raises(FramingError):
        StreamFramer().feed(bad)


@asynccontextmanager
async def transport_on_overlay(**config: Any) -> AsyncIterator[tuple[SipTransport, UdpDriver]]:
    driver = await UdpDriver.open(("127.0.0.1", 0), node_factory(PeerConfig(1, Timing())))
    driver.join([])
    await driver.joined
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    assert driver.node is not None
    sip = await SipTransport.open("127.0.0.1", 0, FrontConfig(DOMAIN, driver.node.me.node_id, "127.0.0.1", **config),
                                  driver, spawn)
    try:
        yield sip, driver
    finally:
        for task in list(tasks):
            task.cancel()
        sip.close()
        driver.close()


async def udp_exchange(port: int, make: Any, count: int = 1) -> list[SipResponse]:
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Phone(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            received.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    try:
        transport.sendto(make(transport.get_extra_info("sockname")[1]), ("127.0.0.1", port))
        answers = [parse(await asyncio.wait_for(received.get(), 5)) for _ in range(count)]
    finally:
        transport.close()
    assert all(isinstance(a, SipResponse) for a in answers)
    return answers  # type: ignore[return-value]


def test_udp_and_tcp_on_one_port_reach_the_front_and_the_overlay():
    async def main() -> None:
        async with transport_on_overlay() as (sip, driver):
            answers = await udp_exchange(sip.port, lambda port: raw_register(port, "bob", port, domain=DOMAIN))
            assert answers[0].status == 200
            assert len((await driver.fetch(id_from_name(f"sip:bob@{DOMAIN}"), Kind.SIP_REGISTRATION)).entries) == 1
            reader, writer = await asyncio.open_connection("127.0.0.1", sip.port)
            over_tcp = raw_register(1, "dave", 1, domain=DOMAIN).replace(b"UDP", b"TCP")
            writer.write(b"\r\n\r\n" + over_tcp[:40])
            await asyncio.sleep(0)  # a message split across segments
            writer.write(over_tcp[40:])
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"SIP/2.0 200 OK")
            writer.close()
    asyncio.run(main())


def test_a_refused_tcp_connection_fails_the_branch_at_once():
    async def main() -> None:
        closed = free_port(socket.SOCK_STREAM)  # nothing listens there
        async with transport_on_overlay(reach_timeout_ms=600_000) as (sip, _):
            registered = await udp_exchange(sip.port, lambda port: raw_register(port, "ora", port, domain=DOMAIN))
            assert registered[0].status == 200  # a phone of this front may send anywhere through it
            answers = await udp_exchange(sip.port, lambda port: raw_request(
                "OPTIONS", f"sip:x@127.0.0.1:{closed};transport=tcp", port, to=f"sip:x@{DOMAIN}"))
            assert answers[0].status == 480  # not after the 10-minute reach timeout: the refusal
    asyncio.run(main())


@given(st.lists(st.binary(max_size=3000), max_size=20))
@settings(max_examples=500)
def test_the_framer_takes_any_bytes_without_raising_anything_but_a_framing_error_or_growing_unbounded(chunks):
    framer = StreamFramer()
    for chunk in chunks:
        try:
            framer.feed(chunk)
        except FramingError:
            return  # the transport closes the connection
        assert len(framer._buffer) <= MESSAGE_BYTES_MAX + BODY_BYTES_MAX + 4

