"""SIP over TLS (net/tls.py, issue 15): sessions in memory first, then fronts on real sockets
where a phone registers over TLS and a front calls another front's TLS port only if the far
end proves to be the node it must be."""

from __future__ import annotations

import asyncio
import os
import ssl
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.core.security import Authority, Identity, Trust
from peerphone.net.sip_transport import TLS_ACCEPTS_BURST, TLS_ACCEPTS_PER_HOST_PER_S
from peerphone.net.tls import TlsRefused, TlsSession, TlsWrongNode, contexts

from tests.net.test_sip_transport import DOMAIN, transport_on_overlay, udp_exchange
from tests.sip.raw import register as raw_register
from tests.sip.raw import request as raw_request

TRUST = Trust(work_bits=0)


def identity() -> Identity:
    return Identity.ad_hoc(os.urandom, 0)


def shake(client: TlsSession, server: TlsSession) -> tuple[bytes, bytes]:
    """Carry records both ways until neither writes; what each end read."""
    read = {"client": b"", "server": b""}
    for _ in range(10):
        to_server, to_client = client.to_send(), server.to_send()
        if not to_server and not to_client:
            break
        if to_server:
            read["server"] += server.receive(to_server)
        if to_client:
            read["client"] += client.receive(to_client)
    return read["client"], read["server"]


def sessions(server_identity: Identity, expect: int, trust: Trust = TRUST) -> tuple[TlsSession, TlsSession]:
    client_context = contexts(identity())[1]
    server_context = contexts(server_identity)[0]
    return (TlsSession(client_context, server=False, admit=trust.admit, expect=expect),
            TlsSession(server_context, server=True, admit=trust.admit))


def test_a_session_to_the_node_expected_carries_sip_both_ways_sealed() -> None:
    callee = identity()
    client, server = sessions(callee, callee.node_id)
    client.send(b"INVITE sip:bob@x SIP/2.0\r\n\r\n")  # written before the handshake: kept until it ends
    wire = client.to_send()
    assert b"INVITE" not in wire
    server.receive(wire)
    read_client, read_server = shake(client, server)
    assert client.established and server.established
    assert client.node_id == callee.node_id
    assert read_server == b"INVITE sip:bob@x SIP/2.0\r\n\r\n"
    server.send(b"SIP/2.0 200 OK\r\n\r\n")
    sealed = server.to_send()
    assert b"200 OK" not in sealed and client.receive(sealed) == b"SIP/2.0 200 OK\r\n\r\n"


def test_a_session_to_another_node_than_expected_is_refused() -> None:
    impostor, victim = identity(), identity()
    client, server = sessions(impostor, victim.node_id)
    with pytest.raises(TlsWrongNode):
        shake(client, server)
    assert not client.established


def test_a_node_the_overlay_does_not_admit_proves_nothing() -> None:
    authority = Authority(Ed25519PrivateKey.generate())
    stranger = identity()  # self-signed: not enrolled by this overlay's authority
    client, server = sessions(stranger, stranger.node_id, Trust(authority.public_key))
    with pytest.raises(TlsWrongNode):
        shake(client, server)


def test_a_phone_without_a_certificate_gets_a_session_with_no_node() -> None:
    phone = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    phone.check_hostname = False
    phone.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = phone.wrap_bio(incoming, outgoing)
    server = TlsSession(contexts(identity())[0], server=True, admit=TRUST.admit)
    for _ in range(10):
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        if outgoing.pending:
            server.receive(outgoing.read())
        reply = server.to_send()
        if not reply:
            break
        incoming.write(reply)
    tls.write(b"REGISTER sip:x SIP/2.0\r\n\r\n")
    assert server.receive(outgoing.read()) == b"REGISTER sip:x SIP/2.0\r\n\r\n"
    assert server.established and server.node_id is None


SERVER_CONTEXT = contexts(identity())[0]
RECORDS = st.binary(max_size=2000).map(lambda b: b"\x16\x03\x01" + len(b).to_bytes(2, "big") + b)


@given(st.lists(st.one_of(st.binary(max_size=2000), RECORDS), max_size=8))
@settings(max_examples=200, deadline=None)
def test_no_bytes_from_the_network_raise_anything_but_a_refusal(chunks: list[bytes]) -> None:
    server = TlsSession(SERVER_CONTEXT, server=True, admit=TRUST.admit)
    try:
        for chunk in chunks:
            server.receive(chunk)
            server.to_send()
    except TlsRefused:
        pass


# -- fronts on real sockets --

async def tls_exchange(port: int, message: bytes) -> bytes:
    """`message` to a front's TLS port, as a phone with no certificate sends it: the head of the answer."""
    phone = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    phone.check_hostname = False
    phone.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=phone)
    try:
        writer.write(message)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()


def test_a_phone_registers_over_tls_and_is_reached_on_its_connection() -> None:
    async def main() -> None:
        async with transport_on_overlay() as (sip, _):
            assert sip.tls_port and sip.tls_port != sip.port
            over_tls = raw_register(1, "tina", 1, domain=DOMAIN).replace(b"UDP", b"TLS")
            head = await tls_exchange(sip.tls_port, over_tls)
            assert head.startswith(b"SIP/2.0 200 OK")
            assert sip.front.counters["sip.tls_sessions"] == 1
    asyncio.run(main())


@pytest.mark.parametrize("right_node", [True, False])
def test_a_front_calls_over_tls_only_the_node_it_must_reach(right_node: bool) -> None:
    async def main() -> None:
        async with transport_on_overlay(reach_timeout_ms=600_000) as (caller, _), \
                transport_on_overlay() as (callee, callee_driver):
            node = callee_driver.node.me.node_id if right_node else identity().node_id
            registered = await udp_exchange(caller.port, lambda port: raw_register(port, "ora", port, domain=DOMAIN))
            assert registered[0].status == 200  # a phone of the caller's front may send anywhere through it
            target = f"sip:nobody@127.0.0.1:{callee.tls_port};transport=tls;pp-node={node:x}"
            answers = await udp_exchange(caller.port, lambda port: raw_request("OPTIONS", target, port,
                                                                               to=f"sip:nobody@{DOMAIN}"), count=1)
            if right_node:  # the callee front answered it itself (nobody is registered there)
                assert answers[0].status == 404
                assert callee.front.counters["sip.tls_sessions"] == 1
                assert caller.front.counters["sip.tls_sessions"] == 1
            else:  # refused at the handshake: at once, not after the reach timeout
                assert answers[0].status == 480
                assert caller.front.counters["refused.sip_tls_node"] == 1
                assert callee.front.counters["sip OPTIONS"] == 0
    asyncio.run(main())


def test_new_tls_connections_from_one_host_are_rate_limited_before_their_handshake() -> None:
    async def main() -> None:
        async with transport_on_overlay() as (sip, _):
            started = time.monotonic()
            opened = [await asyncio.open_connection("127.0.0.1", sip.tls_port) for _ in range(60)]

            def refused() -> int:
                return sip.front.counters["sip dropped: TLS connections from one host past the rate"]

            for _ in range(500):  # until the front has taken or closed each (bounded)
                if refused() + sum(name == "TLS" for name, _ in sip._streams) == 60:
                    break
                await asyncio.sleep(0.01)
            elapsed = time.monotonic() - started  # the bucket refills meanwhile: what it may have let in
            allowed = TLS_ACCEPTS_BURST + int(TLS_ACCEPTS_PER_HOST_PER_S * elapsed) + 1
            assert 60 - allowed <= refused() < 60, (refused(), elapsed)
            for _, writer in opened:
                writer.close()
    asyncio.run(main())
