"""SIP URIs, name-addr values and Via headers (RFC 3261 §19.1, §20.10, §20.42), sans-I/O.

Only what a registrar and proxy read: scheme, user, host, port and parameters of
a URI; the URI and parameters of a name-addr; sent-by and parameters of a Via.
Every function raises `SipParseError` (400) on what it cannot read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .message import SipParseError

PORT_DEFAULT, TLS_PORT_DEFAULT = 5060, 5061  # RFC 3261 §19.1.2
_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?")
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_ESCAPED_UNRESERVED = re.compile(r"%(2[1DdEe]|2[789Aa]|3[0-9]|[46][1-9A-Fa-f]|[57][0-9Aa]|5[Ff]|7[Ee])")
_VIA = re.compile(r"SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;\s]+)\s*(.*)", re.IGNORECASE)


@dataclass(frozen=True)
class Uri:
    scheme: str
    user: str | None
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...] = ()
    has_headers: bool = False  # ?name=value after the host: never routed on, refused in a Request-URI

    @classmethod
    def parse(cls, text: str) -> "Uri":
        scheme, colon, rest = text.strip().partition(":")
        if not colon or scheme.lower() not in ("sip", "sips"):
            raise SipParseError("not a sip: URI")
        # A user part may hold ; ? and : (RFC 4475 intmeth, semiuri); an @ never follows the host.
        userinfo, at, hostpart = rest.rpartition("@")
        hostpart, question, _headers = hostpart.partition("?")
        user = _unescape_unreserved(userinfo.split(":", 1)[0]) if at else None
        hostport, *raw_params = hostpart.split(";")
        match = _HOSTPORT.fullmatch(hostport)
        if match is None or (user is not None and not user):
            raise SipParseError("bad URI host")
        port = int(match.group(2)) if match.group(2) else None
        if port is not None and not 0 < port < 65536:
            raise SipParseError("bad URI port")
        return cls(scheme.lower(), user, match.group(1).lower(), port, _params(raw_params), bool(question))

    def param(self, name: str) -> str | None:
        return next((v or "" for k, v in self.params if k == name), None)

    @property
    def port_or_default(self) -> int:
        """The port, or the transport's default (RFC 3261 §19.1.2): 5061 for TLS, else 5060."""
        return self.port or (TLS_PORT_DEFAULT if (self.param("transport") or "").lower() == "tls" else PORT_DEFAULT)

    @property
    def aor(self) -> str:
        """The address of record: scheme, user and host, nothing else (§10.3 step 5)."""
        return f"{self.scheme}:{self.user}@{self.host}" if self.user else f"{self.scheme}:{self.host}"

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)
        return f"{self.scheme}:{user}{self.host}{port}{params}"


@dataclass(frozen=True)
class NameAddr:
    """A From/To/Contact/Route value: the URI and the header parameters after it."""

    uri: Uri
    params: tuple[tuple[str, str | None], ...]

    @classmethod
    def parse(cls, text: str) -> "NameAddr":
        text = text.strip()
        display_end = _display_name_end(text)
        if "<" in text[display_end:]:
            start = text.index("<", display_end)
            end = text.find(">", start)
            if end < 0:
                raise SipParseError("unclosed <")
            if not all(_TOKEN.fullmatch(word) for word in text[display_end:start].split()):
                raise SipParseError("display name needs quotes")  # RFC 4475 baddn
            return cls(Uri.parse(text[start + 1:end]), _params(text[end + 1:].split(";")[1:]))
        if display_end:
            raise SipParseError("display name without <address>")
        uri_text, *raw_params = text.split(";")  # addr-spec: parameters belong to the header (§20.10)
        uri = Uri.parse(uri_text)
        if uri.has_headers:
            raise SipParseError("a URI with headers needs <>")  # RFC 4475 regbadct
        return cls(uri, _params(raw_params))

    def param(self, name: str) -> str | None:
        return next((v or "" for k, v in self.params if k == name), None)


@dataclass(frozen=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]

    @classmethod
    def parse(cls, text: str) -> "Via":
        match = _VIA.fullmatch(text.strip())
        if match is None:
            raise SipParseError("bad Via")
        hostport = _HOSTPORT.fullmatch(match.group(2))
        if hostport is None:
            raise SipParseError("bad Via sent-by")
        port = int(hostport.group(2)) if hostport.group(2) else None
        if port is not None and not 0 < port < 65536:
            raise SipParseError("bad Via port")
        return cls(match.group(1).upper(), hostport.group(1).lower(), port,
                   _params(match.group(3).split(";")[1:]))

    def param(self, name: str) -> str | None:
        return next((v or "" for k, v in self.params if k == name), None)

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    def reply_to(self) -> tuple[str, int]:
        """Where a response to this hop goes (§18.2.2 with rport, RFC 3581)."""
        host = self.param("received") or self.host
        rport = self.param("rport")
        port = int(rport) if rport and rport.isdigit() else (self.port or 5060)
        return host, port


def _params(raw: list[str]) -> tuple[tuple[str, str | None], ...]:
    out = []
    for item in raw:
        name, eq, value = item.partition("=")
        name = name.strip()
        if not _TOKEN.fullmatch(name):
            raise SipParseError("bad parameter")  # ;; and the like (RFC 4475 badinv01)
        out.append((name.lower(), value.strip().strip('"') if eq else None))
    return tuple(out)


def _display_name_end(text: str) -> int:
    """Where a quoted display name ends (0 when there is none); a quote left open is an error."""
    if not text.startswith('"'):
        return 0
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    raise SipParseError("unterminated quoted string")  # RFC 4475 quotbal


def _unescape_unreserved(user: str) -> str:
    """%75ser is user (§19.1.4: escaped unreserved characters compare equal to themselves);
    anything else (%00, %40) stays escaped."""
    if "%" not in user:
        return user
    return _ESCAPED_UNRESERVED.sub(lambda m: chr(int(m.group(1), 16)), user)
