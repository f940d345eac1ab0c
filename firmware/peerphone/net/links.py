"""Authenticated, encrypted links between nodes (issue 15): one DTLS 1.2 association per
remote address (RFC 6347; RELOAD's own choice, RFC 6940 §5.6.1), run through OpenSSL's
memory BIOs with pyOpenSSL as aiortc runs its DTLS, so the UDP driver keeps its one socket
and its own reads. The peer protocol above it is unchanged: a datagram in, a datagram out.

Why DTLS and not Noise IK: both are published designs, but OpenSSL and pyOpenSSL are
maintained (the one Python Noise library last released in 2020), OpenSSL keeps the replay
window (RFC 6347 §4.1.2.6) and drops a record with a flipped bit itself, and Noise IK needs
the responder's static key before the first datagram, which a node joining through a bare
address does not have. `tools/bench links` measures the price: about 1.5 ms of CPU for a
handshake (both ends) and 8 to 9 µs to seal and open a record, most of it pyOpenSSL's Python.

Identity: OpenSSL's DTLS 1.2 signs handshakes with ECDSA, not Ed25519, so a node makes
a P-256 link key (one per process: its links and its SIP over TLS show the same) and has its
node key certify it (`security.link_certificate`). Each side sends that certificate and its
node certificate; a link counts only when the node certificate is one the overlay admits
(`admit`: trust, puzzle, revocations) and it certified the link key. Every datagram the link
then delivers comes from that node id, which the node checks against the sender the message
names.

Bounds: LINKS_MAX associations (the least recently used goes first), HANDSHAKES_MAX being
made at once, a rate of new ones per source host, a cookie exchange (HelloVerifyRequest,
smaller than the hello) before any state, LINK_QUEUE_MAX datagrams held per link while it
shakes hands, and idle links closed after LINK_IDLE_MS.

The one datagram a node sends outside a link, the reach test's REACH_BACK from a port that has
none (its nonce went over a link), starts with PLAIN; a DTLS record starts with its content
type, 20 to 25.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import weakref
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from OpenSSL import SSL, crypto

from ..core.ingress import BoundedLru, TokenBuckets
from ..core.security import Credential, Identity, link_certificate, link_certified
from ..core.wire.messages import Addr

PLAIN = b"\x00"
LINK_MTU = 1400  # a datagram of the peer protocol (1,200 bytes at most) and a record's 37 fit
LINKS_MAX = 512
HANDSHAKES_MAX = 64
HANDSHAKE_RATE_PER_S = 50  # new associations per source host (the loopback labs run dozens of peers on one)
HANDSHAKE_BURST = 100
# Hellos answered per source host: two per handshake (the second with the cookie). Past it a
# hello costs a lookup, not the cookie's HMAC and OpenSSL's parse: a flood from one host
# leaves the peer the time to serve its links.
HELLO_RATE_PER_S = 2 * HANDSHAKE_RATE_PER_S
HELLO_BURST = 2 * HANDSHAKE_BURST
HANDSHAKE_TIMEOUT_MS = 10_000
# A record from an address we have no link with: the other end kept one we lost (we restarted,
# or moved): we shake hands again, at most this often per address, and only for a record at
# least this long (a hello is about 150 bytes: not much more than came in, to anyone spoofed).
RECONNECT_EVERY_MS = 1000
RECONNECT_RECORD_BYTES_MIN = 64
LINK_QUEUE_MAX = 32
LINK_IDLE_MS = 10 * 60 * 1000
_SWEEP_MS = 10_000
_RECORD_HEADER = 13  # type, version (2), epoch (2), sequence (6), length (2)
_HANDSHAKE, _APPLICATION_DATA = 22, 23
_CLIENT_HELLO = 1
_RANDOM = slice(_RECORD_HEADER + 12 + 2, _RECORD_HEADER + 12 + 2 + 32)  # after the handshake header and version
_DER = serialization.Encoding.DER
_BIO_READ_BYTES = 65_536


def _application_records(data: bytes) -> int:
    """How many records `data` holds when all are application data, else 0."""
    count = at = 0
    while at + _RECORD_HEADER <= len(data):
        if data[at] != _APPLICATION_DATA:
            return 0
        at += _RECORD_HEADER + int.from_bytes(data[at + 11:at + 13], "big")
        count += 1
    return count if at == len(data) else 0


@dataclass(eq=False)
class _Link:
    conn: SSL.Connection
    client: bool
    started_ms: int
    used_ms: int
    node_id: int | None = None  # once established: the node the other end proved to be
    random: bytes = b""  # a client's hello random: which of two crossing hellos goes on
    queue: list[bytes] = field(default_factory=list)


class Links:
    """The links of one node. `admit` turns a node certificate into the credential the
    overlay admits, or None."""

    def __init__(self, identity: Identity, admit: Callable[[bytes], Credential | None],
                 counters: Counter[str] | None = None) -> None:
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._admit = admit
        self._links: OrderedDict[Addr, _Link] = OrderedDict()
        self._shaking: dict[Addr, _Link] = {}  # the links still shaking hands (timers look only at these)
        self._outbox: list[tuple[bytes, Addr]] = []
        self._rate = TokenBuckets[str](HANDSHAKE_RATE_PER_S, HANDSHAKE_BURST, LINKS_MAX)
        self._hello_rate = TokenBuckets[str](HELLO_RATE_PER_S, HELLO_BURST, LINKS_MAX)
        self._cookie_secret = os.urandom(32)
        self._reconnected: BoundedLru[Addr, int] = BoundedLru(LINKS_MAX)  # when we last shook hands again
        self._swept_ms = 0
        self._context = node_context(SSL.DTLS_METHOD, identity)
        self._context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
        self._context.set_options(SSL.OP_NO_QUERY_MTU)  # DTLSv1_listen asks for the cookie exchange
        self._context.set_cookie_generate_callback(self._cookie)
        self._context.set_cookie_verify_callback(lambda conn, cookie: hmac.compare_digest(cookie, self._cookie(conn)))
        self._listener = self._server_conn()

    def _cookie(self, conn: SSL.Connection) -> bytes:
        return hmac.new(self._cookie_secret, conn.get_app_data(), hashlib.sha256).digest()[:16]

    def _server_conn(self) -> SSL.Connection:
        conn = SSL.Connection(self._context, None)
        conn.set_accept_state()
        conn.set_ciphertext_mtu(LINK_MTU)
        return conn

    # -- what the driver calls --

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._outbox = self._outbox, []
        return out

    @property
    def datagrams_waiting(self) -> bool:
        return bool(self._outbox)

    def node_at(self, addr: Addr) -> int | None:
        link = self._links.get(addr)
        return link.node_id if link is not None else None

    def __len__(self) -> int:
        return len(self._links)

    def reset(self) -> None:
        """Forget every link (our address changed: the other ends know us at the old one)."""
        self.counters["link.reset"] += len(self._links)
        self._links.clear()
        self._shaking.clear()

    def send(self, data: bytes, addr: Addr, *, now_ms: int) -> None:
        """Seal `data` for `addr`, shaking hands first when there is no link yet."""
        link = self._links.get(addr)
        if link is None:
            link = self._connect(addr, now_ms)
        if link.node_id is None:
            if len(link.queue) >= LINK_QUEUE_MAX:
                self.counters["drop.link_queue"] += 1
                link.queue.pop(0)
            link.queue.append(data)
            return
        self._seal(link, data, addr, now_ms)

    def receive(self, data: bytes, addr: Addr, *, now_ms: int) -> tuple[int | None, list[bytes]]:
        """The node id of the link `data` came over and the datagrams it carried: none for a
        handshake, a replay, a forgery or a stranger without a link (counted)."""
        if len(data) < _RECORD_HEADER or not 20 <= data[0] <= 25:
            self.counters["drop.link_not_dtls"] += 1
            return None, []
        link = self._links.get(addr)
        if data[0] == _HANDSHAKE and data[3:5] == b"\x00\x00" and data[_RECORD_HEADER] == _CLIENT_HELLO \
                and (link is None or link.client or link.node_id is not None):  # a hello (epoch 0, in clear)
            self._hello(data, addr, link, now_ms)
            return None, []
        if link is None:
            self.counters["drop.link_no_session"] += 1
            last_ms = self._reconnected.get(addr)
            if data[0] == _APPLICATION_DATA and len(data) >= RECONNECT_RECORD_BYTES_MIN and (
                    last_ms is None or now_ms - last_ms >= RECONNECT_EVERY_MS):
                self._reconnected.put(addr, now_ms)
                self.counters["link.reconnect"] += 1
                self._connect(addr, now_ms)  # its hello makes the other end replace the link it kept
            return None, []
        self._links.move_to_end(addr)
        link.used_ms = now_ms
        try:
            link.conn.bio_write(data)
        except SSL.Error:
            self.counters["drop.link_record"] += 1
            return None, []
        if link.node_id is None:
            self._shake(link, addr, now_ms)
            return None, []
        return link.node_id, self._read(link, addr, data)

    def next_deadline_ms(self, now_ms: int) -> int | None:
        deadlines = []
        for link in self._shaking.values():
            deadlines.append(link.started_ms + HANDSHAKE_TIMEOUT_MS)
            left_s = link.conn.DTLSv1_get_timeout()
            if left_s is not None:
                deadlines.append(now_ms + int(left_s * 1000) + 1)
        return min(deadlines) if deadlines else None

    def handle_timer(self, *, now_ms: int) -> None:
        """Retransmit handshake flights that are due; give up handshakes that took too long;
        now and then close links that have been idle."""
        for addr, link in list(self._shaking.items()):
            if now_ms - link.started_ms >= HANDSHAKE_TIMEOUT_MS:
                self._fail(addr, "link.handshake_timeout")
                continue
            try:
                link.conn.DTLSv1_handle_timeout()
            except SSL.Error:
                self._fail(addr, "link.handshake_failed")
                continue
            self._flush(link.conn, addr)
        if now_ms - self._swept_ms >= _SWEEP_MS:
            self._swept_ms = now_ms
            for addr, link in list(self._links.items()):
                if link.node_id is not None and now_ms - link.used_ms >= LINK_IDLE_MS:
                    self._remove(addr)
                    self.counters["link.idle_closed"] += 1

    # -- handshakes --

    def _connect(self, addr: Addr, now_ms: int) -> _Link:
        conn = SSL.Connection(self._context, None)
        conn.set_connect_state()
        conn.set_ciphertext_mtu(LINK_MTU)
        link = _Link(conn, True, now_ms, now_ms)
        self._put(addr, link)
        self.counters["link.connect"] += 1
        self._shake(link, addr, now_ms)
        return link

    def _hello(self, data: bytes, addr: Addr, link: _Link | None, now_ms: int) -> None:
        """A ClientHello from `addr`: answered with a cookie; with a valid cookie, a new server
        association (replacing an established one: the other end started afresh). When both
        ends said hello at once, the lower random goes on as the client."""
        if link is not None and link.client and link.node_id is None and link.random < data[_RANDOM]:
            self.counters["link.crossed"] += 1
            return  # they will answer ours, as we would theirs
        if not self._hello_rate.allow(addr[0], now_ms=now_ms):
            self.counters["drop.link_hello_rate"] += 1
            return
        listener = self._listener
        listener.set_app_data(f"{addr[0]} {addr[1]}".encode())
        try:
            listener.bio_write(data)
            listener.DTLSv1_listen()
        except SSL.WantReadError:
            self.counters["link.hello_answered"] += 1
            self._flush(listener, addr)  # the HelloVerifyRequest, or nothing for a malformed hello
            return
        except SSL.Error:
            self.counters["drop.link_hello"] += 1
            self._listener = self._server_conn()
            return
        self._listener = self._server_conn()
        if len(self._shaking) >= HANDSHAKES_MAX or not self._rate.allow(addr[0], now_ms=now_ms):
            self.counters["drop.link_busy"] += 1
            return
        accepted = _Link(listener, False, now_ms, now_ms, queue=link.queue if link is not None else [])
        self._put(addr, accepted)
        self.counters["link.accept"] += 1
        self._shake(accepted, addr, now_ms)

    def _shake(self, link: _Link, addr: Addr, now_ms: int) -> None:
        try:
            link.conn.do_handshake()
        except SSL.WantReadError:
            self._flush(link.conn, addr, remember_random=link)
            return
        except SSL.Error:
            self._fail(addr, "link.handshake_failed")
            return
        self._flush(link.conn, addr)
        node_id = identify(link.conn, self._admit)
        if node_id is None:
            self._fail(addr, "refused.link_identity")
            return
        link.node_id = node_id
        self._shaking.pop(addr, None)
        self.counters["link.established"] += 1
        queued, link.queue = link.queue, []
        for data in queued:
            self._seal(link, data, addr, now_ms)

    def _fail(self, addr: Addr, counter: str) -> None:
        link = self._remove(addr)
        self.counters[counter] += 1
        if link is not None:
            self.counters["drop.link_queue"] += len(link.queue)

    def _put(self, addr: Addr, link: _Link) -> None:
        self._links[addr] = link
        self._links.move_to_end(addr)
        if link.node_id is None:
            self._shaking[addr] = link
        if len(self._links) > LINKS_MAX:
            self._remove(next(iter(self._links)))
            self.counters["link.evicted"] += 1

    def _remove(self, addr: Addr) -> _Link | None:
        self._shaking.pop(addr, None)
        return self._links.pop(addr, None)

    # -- records --

    def _seal(self, link: _Link, data: bytes, addr: Addr, now_ms: int) -> None:
        link.used_ms = now_ms
        try:
            link.conn.send(data)
        except SSL.Error:
            self.counters["drop.link_unsealable"] += 1
            return
        self._flush(link.conn, addr)

    def _read(self, link: _Link, addr: Addr, data: bytes) -> list[bytes]:
        """The datagrams `data`'s records carried. A datagram of application data alone is read
        one record a call, as many calls as it has records, and leaves OpenSSL nothing to say:
        no call that only raises WantRead, no flush (each costs a Python exception)."""
        records = _application_records(data)
        out: list[bytes] = []
        while not records or len(out) < records:
            try:
                out.append(link.conn.recv(65_535))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # the other end closed it
                self._remove(addr)
                break
            except SSL.Error:
                self._fail(addr, "drop.link_record")
                break
        if records and len(out) < records:
            self.counters["drop.link_record"] += 1  # a replay, or a record that failed its check
        if not records:
            self._flush(link.conn, addr)
        return out

    def _flush(self, conn: SSL.Connection, addr: Addr, remember_random: _Link | None = None) -> None:
        """What OpenSSL wrote, cut at record boundaries into datagrams of at most LINK_MTU."""
        chunks = []
        while True:
            try:
                chunk = conn.bio_read(_BIO_READ_BYTES)
            except SSL.WantReadError:
                break
            chunks.append(chunk)
            if len(chunk) < _BIO_READ_BYTES:
                break  # a memory BIO hands over all it holds up to the size asked: it is empty now
        written = b"".join(chunks)
        if remember_random is not None and not remember_random.random and remember_random.client:
            remember_random.random = written[_RANDOM]
        datagram = b""
        at = 0
        while at + _RECORD_HEADER <= len(written):
            end = at + _RECORD_HEADER + int.from_bytes(written[at + 11:at + 13], "big")
            record = written[at:end]
            if datagram and len(datagram) + len(record) > LINK_MTU:
                self._outbox.append((datagram, addr))
                datagram = b""
            datagram += record
            at = end
        if datagram:
            self._outbox.append((datagram, addr))


_Shown = tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate]
_shown_by: "weakref.WeakKeyDictionary[Identity, _Shown]" = weakref.WeakKeyDictionary()


def _shown(identity: Identity) -> _Shown:
    """What a node shows: its P-256 key, the certificate its node key gave that key, and its
    node certificate. Made once per node and process, for the links' DTLS and both ends of
    SIP's TLS."""
    shown = _shown_by.get(identity)
    if shown is None:
        key = ec.generate_private_key(ec.SECP256R1())
        shown = (key, x509.load_der_x509_certificate(link_certificate(identity, key.public_key(), os.urandom)),
                 x509.load_der_x509_certificate(identity.certificate))
        _shown_by[identity] = shown
    return shown


def node_context(method: int, identity: Identity) -> SSL.Context:
    """An OpenSSL context that shows the node: its P-256 key, certified by the node key
    (`security.link_certificate`), with the node certificate after it. Used for the DTLS of
    links and the TLS of SIP (net/tls.py). Whoever uses it checks the other end with
    `identify`: OpenSSL's chain check knows no overlay."""
    ctx = SSL.Context(method)
    link_key, leaf, node = _shown(identity)
    try:
        ctx.use_privatekey(link_key)
        ctx.use_certificate(leaf)
        ctx.add_extra_chain_cert(node)
    except TypeError:  # pyOpenSSL before 24.3 (armhf's 23.2) takes only its own objects
        ctx.use_privatekey(crypto.PKey.from_cryptography_key(link_key))
        ctx.use_certificate(crypto.X509.from_cryptography(leaf))
        ctx.add_extra_chain_cert(crypto.X509.from_cryptography(node))
    ctx.set_options(SSL.OP_NO_TICKET)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)  # an idle link holds no record buffers
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)  # no resumption: nothing kept of links gone
    ctx.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305")
    return ctx


def identify(conn: SSL.Connection, admit: Callable[[bytes], Credential | None]) -> int | None:
    """The node id of the other end of a handshake: its node certificate, admitted, certified
    its link key. None when it showed none, or one the overlay does not admit."""
    # (to_cryptography rather than as_cryptography=True: armhf has pyOpenSSL 23.2.)
    leaf = conn.get_peer_certificate()
    if leaf is None:
        return None
    for theirs in conn.get_peer_cert_chain() or []:
        cert = theirs.to_cryptography()
        if isinstance(cert.public_key(), Ed25519PublicKey):
            credential = admit(cert.public_bytes(_DER))
            if credential is not None and link_certified(leaf.to_cryptography().public_bytes(_DER), credential):
                return credential.node_id
    return None
