"""Issue 15's REGISTER attacks against real processes: a front with a users file challenges a
REGISTER for Bob without his password, refuses 10,000 wrong ones from one host (slowed after a
few, counted in the peer's stats), and Bob's own pjsua2 phone still registers with his
password and takes a call, the tone checked at his end. A stranger who calls as Bob is
challenged and refused; Bob's phone answers the challenge and his call is heard."""

from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path

import pytest

from tests.procs import stat_all, stop
from tests.sip.raw import register, request
from tests.sip.world import DOMAIN, call_and_hear, start_overlay, start_phone

pytestmark = pytest.mark.sip

GUESSES = 10_000


def digest(header: str, method: str, uri: str, nonce: str, realm: str, password: str) -> bytes:
    """Bob's answer to `nonce` with `password` for `method` on `uri` (MD5, RFC 2617's qop=auth)."""
    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    response = h(f"{h(f'bob:{realm}:{password}')}:{nonce}:00000001:c0ffee:auth:{h(f'{method}:{uri}')}")
    return (f'{header}: Digest username="bob", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"\r\n').encode()


def digest_register(port: int, nonce: str, realm: str, password: str, contact_port: int | None = None,
                    expires: int = 60) -> bytes:
    """Bob's REGISTER answering `nonce` with `password`."""
    plain = register(port, "bob", contact_port or port, expires, domain=DOMAIN)
    auth = digest("Authorization", "REGISTER", f"sip:{DOMAIN}", nonce, realm, password)
    return plain.replace(b"Content-Length:", auth + b"Content-Length:")


def _stranger_calls_as_bob(front: tuple[str, int], callee: str) -> list[int]:
    """From a host of our own (127.0.0.3), an INVITE as Bob, then one answering the challenge
    with a wrong password: the final statuses."""
    finals = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.3", 0))
        s.settimeout(5)
        port = s.getsockname()[1]
        auth = b""
        for _ in range(2):
            invite = request("INVITE", callee, port, sender=f"sip:bob@{DOMAIN}",
                             extra=f"Contact: <sip:bob@127.0.0.3:{port}>\r\n")
            s.sendto(invite.replace(b"Content-Length:", auth + b"Content-Length:"), front)
            while (answer := s.recv(65536).decode()).startswith("SIP/2.0 100"):
                pass
            finals.append(int(answer.split(" ", 2)[1]))
            nonce = re.search(r'nonce="([^"]+)"', answer)
            realm = re.search(r'realm="([^"]+)"', answer)
            if nonce and realm:
                auth = digest("Proxy-Authorization", "INVITE", callee, nonce.group(1), realm.group(1), "a guess")
    return finals


def _guess(front: tuple[str, int], guesses: int) -> dict[int, int]:
    """Ask for a challenge, then answer it wrong `guesses` times, one at a time, from a host of
    our own (127.0.0.2: Bob's phone is at 127.0.0.1); the statuses."""
    statuses: dict[int, int] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        s.settimeout(5)
        port = s.getsockname()[1]
        s.sendto(register(port, "bob", port, domain=DOMAIN), front)
        challenge = s.recv(65536).decode()
        assert challenge.startswith("SIP/2.0 401"), challenge
        nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)
        realm = re.search(r'realm="([^"]+)"', challenge).group(1)
        for i in range(guesses):  # bounded
            s.sendto(digest_register(port, nonce, realm, f"guess {i}"), front)
            status = int(s.recv(65536).split(b" ", 2)[1])
            statuses[status] = statuses.get(status, 0) + 1
    return statuses


def test_bob_s_number_is_his_against_a_stranger_and_a_guesser(tmp_path: Path):
    users = tmp_path / "users"
    users.write_text("# the front's users\nbob bob's password\n")
    users.chmod(0o600)
    password = tmp_path / "bob.password"
    password.write_text("bob's password\n")
    peers = start_overlay(2, "--users", str(users))
    try:
        host, port = peers[0].sip.rsplit(":", 1)
        front = (host, int(port))
        statuses = _guess(front, GUESSES)
        assert set(statuses) == {403} and sum(statuses.values()) == GUESSES
        counters = dict(stat_all([peers[0].addr])[0].counters)
        assert counters["refused.sip_password"] + counters["refused.sip_guessing"] == GUESSES
        assert counters["refused.sip_guessing"] > GUESSES // 2  # slowed: most were not even looked at
        bob = start_phone("bob", peers[0].sip, "--password-file", str(password), record_dir=tmp_path)
        alice = start_phone("alice", None, "--listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0",
                            "--bootstrap", peers[1].addr, record_dir=tmp_path)
        try:
            call_and_hear(alice, bob, f"sip:bob@{DOMAIN}", "alice")  # from her front, over TLS: not asked
            before = dict(stat_all([peers[0].addr])[0].counters)
            assert _stranger_calls_as_bob(front, f"sip:alice@{DOMAIN}") == [407, 403]
            counters = dict(stat_all([peers[0].addr])[0].counters)
            assert counters["refused.sip_password"] == before["refused.sip_password"] + 1
            call_and_hear(bob, alice, f"sip:alice@{DOMAIN}", "bob")  # his phone answers the 407 itself
            after = dict(stat_all([peers[0].addr])[0].counters)
            assert after["sip.challenged"] > counters["sip.challenged"]
        finally:
            alice.stop()
            bob.stop()
    finally:
        stop(peers)
