"""SIP over TLS (RFC 3261 §26.2, issue 15): one TLS session on one TCP connection, run
through OpenSSL's memory BIOs as the links run DTLS (links.py), so the SIP transport keeps
its asyncio connections and its framer, and the far end's certificate chain is ours to read.

A front shows its node (`links.node_context`): a P-256 key its node key certified. A front
that calls another front's TLS port knows from the callee's registration which node that is,
and the session opens only if the far end proves it (`identify`): SDP's SRTP keys (SDES)
then reach only that node. A front that calls shows its node too, and a front with users
takes a request that speaks as one of the domain's users from it without more (the calling
front checked that user). A phone needs no certificate: the front takes any TLS client and
asks the phone for its password (digest) as over UDP. The other end of a phone's dialog may
be a phone's contact, which proves nothing: such a session is encrypted, not authenticated.
"""

from __future__ import annotations

from typing import Callable

from OpenSSL import SSL

from ..core.security import Credential, Identity
from .links import identify, node_context

READ_BYTES = 65_536


class TlsRefused(Exception):
    """The session cannot go on: a failed handshake, a bad record, a close."""


class TlsWrongNode(TlsRefused):
    """The far end is not the node it must be: another node, or none the overlay admits."""


def contexts(identity: Identity) -> tuple[SSL.Context, SSL.Context]:
    """The server's context (a client certificate is asked for, not required: phones have
    none) and the client's (the server must show one)."""
    server = node_context(SSL.TLS_METHOD, identity)
    server.set_verify(SSL.VERIFY_PEER, lambda *_: True)
    server.set_min_proto_version(SSL.TLS1_2_VERSION)  # pjsua2's bundled OpenSSL 1.0.2 speaks 1.2
    client = node_context(SSL.TLS_METHOD, identity)
    client.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
    client.set_min_proto_version(SSL.TLS1_2_VERSION)
    return server, client


class TlsSession:
    """Bytes from the socket in, SIP bytes out (and the reverse), for one connection.
    `expect`: the node the server must prove to be (a client session; 0: anyone)."""

    def __init__(self, context: SSL.Context, *, server: bool, admit: Callable[[bytes], Credential | None],
                 expect: int = 0) -> None:
        self._conn = SSL.Connection(context, None)
        self._admit = admit
        self._expect = expect
        self._plain_out: list[bytes] = []  # SIP written before the handshake ended
        self.established = False
        self.node_id: int | None = None  # the far end's node, when it showed an admitted one
        if server:
            self._conn.set_accept_state()
        else:
            self._conn.set_connect_state()
            self._shake()

    def receive(self, data: bytes) -> bytes:
        """Decrypted bytes `data` completed (often none). Raises TlsRefused."""
        try:
            self._conn.bio_write(data)
        except SSL.Error as e:
            raise TlsRefused(f"bad record ({_reason(e)})") from None
        if not self.established:
            self._shake()
            if not self.established:
                return b""
        out = bytearray()
        while True:
            try:
                out += self._conn.recv(READ_BYTES)
            except SSL.WantReadError:
                return bytes(out)
            except SSL.ZeroReturnError:
                raise TlsRefused("closed by the far end") from None
            except SSL.Error as e:
                raise TlsRefused(f"bad record ({_reason(e)})") from None

    def send(self, data: bytes) -> None:
        if not self.established:
            self._plain_out.append(data)
            return
        try:
            self._conn.sendall(data)
        except SSL.Error as e:
            raise TlsRefused(f"cannot seal ({_reason(e)})") from None

    def to_send(self) -> bytes:
        """The records OpenSSL wrote since last asked: for the socket."""
        chunks = []
        while True:
            try:
                chunks.append(self._conn.bio_read(READ_BYTES))
            except SSL.WantReadError:
                return b"".join(chunks)

    def _shake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as e:
            raise TlsRefused(f"handshake failed ({_reason(e)})") from None
        self.node_id = identify(self._conn, self._admit)
        if self._expect and self.node_id != self._expect:
            raise TlsWrongNode(f"the far end is not node {self._expect:x}")
        self.established = True
        waiting, self._plain_out = self._plain_out, []
        for data in waiting:
            self.send(data)


def _reason(error: SSL.Error) -> str:
    details = error.args[0] if error.args and isinstance(error.args[0], list) else []
    return str(details[-1][2]) if details and len(details[-1]) > 2 else type(error).__name__
