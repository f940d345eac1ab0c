"""Hand-made SIP requests for tests, and one request-response exchange over UDP."""

from __future__ import annotations

import os
import socket
from typing import Callable

DOMAIN = "peerphone.local"


def request(method: str, uri: str, port: int, *, to: str | None = None, extra: str = "", body: bytes = b"",
            forwards: int = 70, call_id: str | None = None, sender: str = f"sip:alice@{DOMAIN}") -> bytes:
    """A request as a UA at 127.0.0.1:`port` sends it (the headers of RFC 3261 §8.1.1)."""
    head = (f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{os.urandom(6).hex()}\r\n"
            f"Max-Forwards: {forwards}\r\nFrom: <{sender}>;tag=a1\r\nTo: <{to or uri}>\r\n"
            f"Call-ID: {call_id or os.urandom(6).hex()}@test\r\nCSeq: 1 {method}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def register(port: int, user: str, contact_port: int, expires: int = 60, domain: str = DOMAIN) -> bytes:
    return request("REGISTER", f"sip:{domain}", port, to=f"sip:{user}@{domain}", sender=f"sip:{user}@{domain}",
                   extra=f"Contact: <sip:{user}@127.0.0.1:{contact_port}>\r\nExpires: {expires}\r\n")


def exchange(server: tuple[str, int], make: Callable[[int], bytes], timeout: float = 5.0) -> str:
    """Send make(our port) to `server` from a fresh UDP socket; the status line of the answer ('' if none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(make(s.getsockname()[1]), server)
        try:
            return s.recv(65536).decode(errors="replace").split("\r\n")[0]
        except OSError:
            return ""


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free on 127.0.0.1 now (for programs that cannot be told to pick one themselves)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
