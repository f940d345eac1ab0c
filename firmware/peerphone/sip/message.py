"""SIP messages (RFC 3261 §7): a bounded parser and a serializer, sans-I/O.

Every byte from the network is hostile until parsed: `parse` either returns a
message or raises `SipParseError`, whose `status` is what a server answers (400,
or 413/505/...), and never anything else. Bounds are named in `Limits`.

Header names are kept as received for forwarding but compared case-insensitively
and with compact forms expanded (`v` is Via, §7.3.3). Folded header lines (a line
starting with whitespace continues the previous one, §7.3.1) are unfolded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

MESSAGE_BYTES_MAX = 16 * 1024  # far above any request a phone sends; UDP ones stay under 1,300
HEADERS_MAX = 64
HEADER_BYTES_MAX = 2048
BODY_BYTES_MAX = 8 * 1024

COMPACT = {"i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length", "c": "content-type",
           "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via", "o": "event", "u": "allow-events",
           "r": "refer-to"}
REQUIRED = ("via", "to", "from", "call-id", "cseq", "max-forwards")  # §8.1.1; OPTIONS and all others alike

_TOKEN = re.compile(rb"[A-Za-z0-9.!%*_+`'~-]+")
_REQUEST_LINE = re.compile(rb"([A-Za-z0-9.!%*_+`'~-]+) (\S+) SIP/(\d+\.\d+)")
_STATUS_LINE = re.compile(rb"SIP/(\d+\.\d+) (\d{3}) ([^\r\n]*)")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


class SipParseError(Exception):
    """Not a SIP message we accept; `status` is the response a server sends (if any)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


_CANONICAL: dict[str, str] = {}  # header names seen, as written -> canonical; bounded
_CANONICAL_MAX = 512
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but tab


def canonical(name: str) -> str:
    """Lower case, compact forms expanded; remembered for the names phones use (a hot path)."""
    known = _CANONICAL.get(name)
    if known is not None:
        return known
    lower = name.lower()
    known = COMPACT.get(lower, lower)
    if len(_CANONICAL) < _CANONICAL_MAX:
        _CANONICAL[name] = known
    return known


@dataclass
class _Message:
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def get(self, name: str) -> str | None:
        """The first value of header `name` (any case, compact or long form)."""
        want = canonical(name)
        for n, v in self.headers:
            if (_CANONICAL.get(n) or canonical(n)) == want:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, comma-separated lists split (Via, Route, Contact...)."""
        want = canonical(name)
        return [part.strip() for n, v in self.headers if canonical(n) == want for part in _split_commas(v)]

    def cseq(self) -> tuple[int, str]:
        value = self.get("cseq")
        parts = (value or "").split()
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10 or int(parts[0]) >= 2**31:
            raise SipParseError("bad CSeq")
        return int(parts[0]), parts[1]

    def _head_bytes(self, first_line: str) -> bytes:
        lines = [first_line] + [f"{n}: {v}" for n, v in self.headers if canonical(n) != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class SipRequest(_Message):
    method: str = ""
    uri: str = ""

    def to_bytes(self) -> bytes:
        return self._head_bytes(f"{self.method} {self.uri} SIP/2.0") + self.body

    def max_forwards(self) -> int:
        value = (self.get("max-forwards") or "").strip()
        if not value.isdigit() or len(value) > 10 or int(value) > 255:  # 0068 is 68 (RFC 4475 wsinv)
            raise SipParseError("bad Max-Forwards")
        return int(value)


@dataclass
class SipResponse(_Message):
    status: int = 0
    reason: str = ""

    def to_bytes(self) -> bytes:
        return self._head_bytes(f"SIP/2.0 {self.status} {self.reason}") + self.body


SipMessage = Union[SipRequest, SipResponse]


def parse(data: bytes) -> SipMessage:
    """One SIP message from one datagram (or one framed stream message)."""
    if len(data) > MESSAGE_BYTES_MAX:
        raise SipParseError("message too large", 413)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError("no blank line after the headers")
    lines = head.split(b"\r\n")
    first, header_lines = lines[0], lines[1:]
    message: SipMessage
    request = _REQUEST_LINE.fullmatch(first)
    if request is not None:
        method, uri, version = request.groups()
        message = SipRequest(method=method.decode("ascii"), uri=_text(uri, "Request-URI"))
        if not _URI.fullmatch(message.uri):
            raise SipParseError("bad Request-URI")
    else:
        status = _STATUS_LINE.fullmatch(first)
        if status is None:
            raise SipParseError("bad request line")
        version, code, reason = status.groups()
        if not 100 <= int(code) <= 699:
            raise SipParseError("bad status code")
        message = SipResponse(status=int(code), reason=_text(reason, "reason phrase"))
    if version != b"2.0":
        raise SipParseError("SIP version not supported", 505)
    message.headers = _headers(header_lines)
    length = message.get("content-length")
    if length is None:
        message.body = body  # allowed over UDP (§18.3): the datagram ends the body
    else:
        length = length.strip()
        if not length.isdigit() or len(length) > 6:
            raise SipParseError("bad Content-Length")
        if int(length) > len(body):
            raise SipParseError("body shorter than Content-Length")
        message.body = body[:int(length)]  # §18.3: extra bytes of a datagram are discarded
    if len(message.body) > BODY_BYTES_MAX:
        raise SipParseError("body too large", 413)
    return message


ANSWER_HEADERS = ("via", "from", "to", "call-id", "cseq")  # what a response copies from its request (§8.2.6)


def salvage(data: bytes) -> SipRequest | None:
    """Of a request `parse` refused, what is needed to answer it (RFC 4475 §3.1.2 wants a 400
    for most): its method and the headers a response copies. None when those cannot be read
    (or it is an ACK, which is never answered): then it is only dropped."""
    head = data[:MESSAGE_BYTES_MAX].partition(b"\r\n\r\n")[0]
    first, *lines = head.split(b"\r\n")
    method = first.split(b" ", 1)[0]
    if not _TOKEN.fullmatch(method) or method.startswith(b"SIP/") or method == b"ACK":
        return None
    request = SipRequest(method=method.decode("ascii"))
    kept = False  # the header line before was one of those
    for raw in lines[:HEADERS_MAX]:
        if raw[:1] in (b" ", b"\t"):  # folded: continues the header line before it
            if kept:
                kept_name, kept_value = request.headers[-1]
                request.headers[-1] = (kept_name, f"{kept_value} {raw.strip().decode('utf-8', 'replace')}")
            continue
        name_bytes, colon, value = raw.partition(b":")
        name_bytes = name_bytes.rstrip(b" \t")
        kept = bool(colon and _TOKEN.fullmatch(name_bytes)) and canonical(name_bytes.decode()) in ANSWER_HEADERS
        if kept:
            request.headers.append((name_bytes.decode(), value.strip().decode("utf-8", "replace")))
    if any(len(v) > HEADER_BYTES_MAX or _CONTROL.search(v) for _, v in request.headers) or \
            not all(request.get(name) for name in ("via", "call-id", "cseq")):
        return None
    return request


def check_request(request: SipRequest) -> None:
    """The mandatory headers of §8.1.1 are there and well formed."""
    for name in REQUIRED:
        if request.get(name) is None:
            raise SipParseError(f"missing {name} header")
    number, method = request.cseq()
    if method != request.method:
        raise SipParseError("CSeq method differs from the request's")
    request.max_forwards()


def _headers(lines: list[bytes]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for raw in lines:
        if len(raw) > HEADER_BYTES_MAX:
            raise SipParseError("header line too long")
        if raw[:1] in (b" ", b"\t"):
            if not headers:
                raise SipParseError("continuation line before any header")
            name, value = headers[-1]
            value = f"{value} {_text(raw.strip(), 'header')}"
            if len(value) > HEADER_BYTES_MAX:
                raise SipParseError("header line too long")
            headers[-1] = (name, value)
            continue
        name_bytes, colon, value_bytes = raw.partition(b":")
        name_bytes = name_bytes.rstrip(b" \t")
        if not colon or not _TOKEN.fullmatch(name_bytes):
            raise SipParseError("bad header line")
        headers.append((name_bytes.decode("ascii"), _text(value_bytes.strip(), "header")))
        if len(headers) > HEADERS_MAX:
            raise SipParseError("too many headers")
    return headers


def _text(raw: bytes, what: str) -> str:
    """UTF-8 without control characters (tab allowed)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError(f"{what} is not UTF-8") from None
    if _CONTROL.search(text):
        raise SipParseError(f"control character in {what}")
    return text


def _split_commas(value: str) -> list[str]:
    """Split at commas outside quotes and angle brackets (§7.3.1)."""
    if "," not in value:  # most values: one part, no scan
        return [value] if value.strip() else []
    parts, depth, quoted, start = [], 0, False, 0
    for i, c in enumerate(value):
        if c == '"' and (i == 0 or value[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and c == "<":
            depth += 1
        elif not quoted and c == ">":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and c == ",":
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p for p in parts if p.strip()]
