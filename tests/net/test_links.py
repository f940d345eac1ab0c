"""Links between nodes (net/links.py, issue 15): DTLS through memory BIOs, two ends in one
process with datagrams carried by hand; then a real peer process attacked over loopback."""

from __future__ import annotations

import os
import random
import socket

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL
from peerphone.app.config import DEFAULT_OVERLAY, overlay_id, parse_hostport
from peerphone.core.peer import PeerConfig
from peerphone.core.security import Authority, Identity, Trust
from peerphone.core.wire import encode
from peerphone.core.wire.messages import EMPTY, Code, Message
from peerphone.net import links as links_module
from peerphone.net.links import HANDSHAKE_BURST, PLAIN, Links
from peerphone.net.loop import run
from peerphone.net.tls import contexts
from peerphone.net.udp import UdpDriver, system_node_factory

from tests.procs import start_peer, stop

TRUST = Trust(work_bits=0)
A_ADDR, B_ADDR = ("10.0.0.1", 4000), ("10.0.0.2", 4000)


def identity() -> Identity:
    return Identity.ad_hoc(os.urandom, 0)


class Pair:
    """Two ends, and the wire between them: what each sent, delivered when the test says."""

    def __init__(self, a: Identity | None = None, b: Identity | None = None, trust: Trust = TRUST) -> None:
        self.a_id, self.b_id = a or identity(), b or identity()
        self.a, self.b = Links(self.a_id, trust.admit), Links(self.b_id, trust.admit)
        self.got: dict[str, list[tuple[int | None, bytes]]] = {"a": [], "b": []}
        self.wire: list[tuple[str, bytes]] = []  # every datagram, to whom

    def deliver(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            moved = False
            for links, other in ((self.a, "b"), (self.b, "a")):
                for data, _ in links.datagrams_to_send():
                    moved = True
                    self.wire.append((other, data))
                    self.receive(other, data)
            if not moved:
                return

    def receive(self, name: str, data: bytes) -> None:
        links, sender = (self.a, B_ADDR) if name == "a" else (self.b, A_ADDR)
        node_id, carried = links.receive(data, sender, now_ms=0)
        self.got[name] += [(node_id, d) for d in carried]


def test_a_link_carries_datagrams_both_ways_from_the_node_it_proved_to_be() -> None:
    pair = Pair()
    pair.a.send(b"hello b", B_ADDR, now_ms=0)  # queued while the hands shake
    pair.deliver()
    pair.b.send(b"hello a", A_ADDR, now_ms=0)
    pair.deliver()
    assert pair.got["b"] == [(pair.a_id.node_id, b"hello b")]
    assert pair.got["a"] == [(pair.b_id.node_id, b"hello a")]
    assert pair.a.node_at(B_ADDR) == pair.b_id.node_id and pair.b.node_at(A_ADDR) == pair.a_id.node_id
    assert all(b"hello" not in data for _, data in pair.wire)  # sealed on the wire


def test_a_replayed_an_altered_and_a_strangers_record_are_dropped_and_counted() -> None:
    pair = Pair()
    pair.a.send(b"first", B_ADDR, now_ms=0)
    pair.deliver()
    pair.a.send(b"pay bob", B_ADDR, now_ms=0)
    (record, _), = pair.a.datagrams_to_send()
    pair.receive("b", record)
    pair.receive("b", record)  # the same record again
    flipped = bytearray(record)
    flipped[-5] ^= 1
    pair.a.send(b"pay bob", B_ADDR, now_ms=0)
    (fresh, _), = pair.a.datagrams_to_send()
    pair.receive("b", bytes(flipped[:-1]) + fresh[-1:])  # not even the header's sequence is the fresh one's
    altered = bytearray(fresh)
    altered[-5] ^= 1
    pair.receive("b", bytes(altered))
    assert [d for _, d in pair.got["b"]] == [b"first", b"pay bob"]
    assert pair.b.counters["drop.link_record"] == 3
    stranger = Links(identity(), TRUST.admit)
    node_id, carried = stranger.receive(record, A_ADDR, now_ms=0)  # a record of a link it does not have
    assert (node_id, carried) == (None, []) and stranger.counters["drop.link_no_session"] == 1
    assert pair.b.receive(PLAIN + b"x" * 40, ("10.0.0.3", 1), now_ms=0) == (None, [])
    assert pair.b.counters["drop.link_not_dtls"] == 1


def test_every_record_of_a_datagram_is_read_and_a_replayed_one_among_them_dropped() -> None:
    pair = Pair()
    pair.a.send(b"first", B_ADDR, now_ms=0)
    pair.deliver()
    records = []
    for text in (b"one", b"two", b"three"):
        pair.a.send(text, B_ADDR, now_ms=0)
        (record, _), = pair.a.datagrams_to_send()
        records.append(record)
    pair.receive("b", records[0] + records[1])
    pair.receive("b", records[1] + records[2])  # the second again, beside a fresh one
    assert [d for _, d in pair.got["b"]] == [b"first", b"one", b"two", b"three"]
    assert pair.b.counters["drop.link_record"] == 1


def test_a_node_shows_one_link_key_on_its_links_and_on_both_ends_of_its_sip_tls() -> None:
    def shown(ctx: SSL.Context) -> bytes:
        return SSL.Connection(ctx, None).get_certificate().to_cryptography().fingerprint(hashes.SHA256())

    me, other = identity(), identity()
    tls_server, tls_client = contexts(me)
    assert len({shown(links_module.node_context(SSL.DTLS_METHOD, me)), shown(tls_server), shown(tls_client)}) == 1
    assert shown(links_module.node_context(SSL.DTLS_METHOD, other)) != shown(tls_server)


def test_a_node_the_overlay_does_not_admit_gets_no_link() -> None:
    authority = Authority(Ed25519PrivateKey.generate())  # the enrolled overlay b belongs to; a is ad hoc
    enrolled = authority.enroll(os.urandom)
    pair = Pair(b=enrolled)
    pair.b = Links(enrolled, Trust(authority.public_key).admit)
    pair.a.send(b"let me in", B_ADDR, now_ms=0)
    pair.deliver()
    assert pair.got["b"] == [] and pair.b.counters["refused.link_identity"] == 1
    assert pair.b.node_at(A_ADDR) is None


def test_a_node_certificate_beside_a_link_key_it_did_not_certify_proves_nothing(monkeypatch) -> None:
    """Mallory sends Alice's node certificate (public: Alice shows it to everyone) with a link
    key of her own, certified by her own key: the link is refused."""
    alice, mallory = identity(), identity()
    real = links_module.link_certificate
    monkeypatch.setattr(links_module, "link_certificate", lambda _, key, entropy: real(mallory, key, entropy))
    forger = Links(alice, TRUST.admit)
    monkeypatch.undo()
    pair = Pair()
    pair.a = forger
    pair.a.send(b"i am alice", B_ADDR, now_ms=0)
    pair.deliver()
    assert pair.got["b"] == [] and pair.b.counters["refused.link_identity"] == 1


def test_two_hellos_at_once_make_one_link() -> None:
    pair = Pair()
    pair.a.send(b"from a", B_ADDR, now_ms=0)
    pair.b.send(b"from b", A_ADDR, now_ms=0)
    pair.deliver(40)
    assert pair.got["b"] == [(pair.a_id.node_id, b"from a")] and pair.got["a"] == [(pair.b_id.node_id, b"from b")]
    assert pair.a.counters["link.crossed"] + pair.b.counters["link.crossed"] == 1


def test_a_hello_flood_from_spoofed_addresses_leaves_no_state() -> None:
    victim, attacker = Links(identity(), TRUST.admit), Links(identity(), TRUST.admit)
    attacker.send(b"x", B_ADDR, now_ms=0)
    (hello, _), = attacker.datagrams_to_send()
    rng = random.Random(3)
    for i in range(2000):
        victim.receive(hello, (f"10.{rng.randrange(256)}.{rng.randrange(256)}.1", 1000 + i), now_ms=0)
    replies = victim.datagrams_to_send()
    sent = b"".join(d for d, _ in replies)
    assert len(victim) == 0  # no association without a cookie that went to the address
    assert len(sent) < len(hello) * 2000  # and less out than in: nothing to amplify


def test_handshakes_from_one_host_are_rate_limited() -> None:
    victim = Links(identity(), TRUST.admit)
    clients = [Links(identity(), TRUST.admit) for _ in range(HANDSHAKE_BURST + 20)]
    for port, client in enumerate(clients, 5000):
        addr = ("10.9.9.9", port)
        client.send(b"x", B_ADDR, now_ms=0)
        for _ in range(4):
            for data, _ in client.datagrams_to_send():
                victim.receive(data, addr, now_ms=0)
            for data, to in victim.datagrams_to_send():
                client.receive(data, B_ADDR, now_ms=0)
    assert victim.counters["link.accept"] == HANDSHAKE_BURST
    assert victim.counters["drop.link_busy"] + victim.counters["drop.link_hello_rate"] >= 20


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500), st.sampled_from([b"\x16", b"\x17", b"\x15", b"\x14", b""]))
def test_no_datagram_raises(data: bytes, first: bytes) -> None:
    links = LINKS_UNDER_FUZZ
    links.receive(first + data, ("10.1.1.1", 1), now_ms=0)
    links.receive(first + data, ("10.1.1.2", 1), now_ms=0)
    links.datagrams_to_send()


LINKS_UNDER_FUZZ = Links(identity(), TRUST.admit)


# -- a real peer, attacked over loopback --

def _raw(addr: str, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, parse_hostport(addr, 0))


def test_a_real_peer_drops_replays_flipped_bits_and_strangers() -> None:
    peer = start_peer()
    try:
        async def attack() -> dict[str, int]:
            config = PeerConfig(overlay_id(DEFAULT_OVERLAY), client=True)
            ident = Identity.ad_hoc(os.urandom, config.trust.work_bits)
            driver = await UdpDriver.open(("127.0.0.1", 0), system_node_factory(config, ident))
            sent: list[bytes] = []
            real_send = driver._send
            driver._send = lambda sock, data, addr: (sent.append(data), real_send(sock, data, addr))[1]  # type: ignore
            try:
                driver.join([parse_hostport(peer.addr, 0)])
                await driver.joined
                await driver.stat(parse_hostport(peer.addr, 0))
                record = sent[-1]
                flipped = bytearray(record)
                flipped[-3] ^= 0x40
                for d in (record, record, bytes(flipped)):  # from the link's own address
                    driver._sock.sendto(d, parse_hostport(peer.addr, 0))
                ping = encode(Message(8, (ident.node_id,), (), 7, Code.PING, EMPTY), config.overlay_id)
                _raw(peer.addr, [record, ping])  # from a port that has no link
                # The peer reads its socket in order: it has judged all of those when it answers this.
                return dict((await driver.stat(parse_hostport(peer.addr, 0))).counters)
            finally:
                driver.close()

        counters = run(attack())
        assert counters["drop.link_record"] >= 3, counters
        assert counters["drop.link_no_session"] >= 1 and counters["drop.link_not_dtls"] >= 1, counters
    finally:
        stop([peer])
