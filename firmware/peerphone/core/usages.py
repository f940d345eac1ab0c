"""The kinds of data the overlay keeps (DESIGN.md, "Data the overlay keeps").

Kind ids name what a value is; each kind has one data model. Generic values of
`peerphone put` / `get` have one kind per data model; the SIP usages store
records whose bytes are decoded here, as hostile as any other network input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum

from .ids import id_from_hex
from .limits import (
    CONTENT_TYPE_CHARS_MAX,
    HOST_CHARS_MAX,
    LIFETIME_S_MAX,
    REGISTRATION_LIFETIME_S_MAX,
    URI_CHARS_MAX,
    VALUE_BYTES_MAX,
)
from .wire.messages import Addr, DataModel


class Kind(IntEnum):
    BLOB = 1   # one value per key
    LIST = 2   # values appended under a key
    MAP = 3    # values under a key and a sub-key
    SIP_REGISTRATION = 10  # under the AOR: one entry per contact, keyed by the contact's hash
    OFFLINE_MESSAGE = 11   # under the recipient's AOR: MESSAGEs appended until it registers
    GATEWAY = 12           # under a domain's key: one entry per peer that gateways to it
    REVOCATION = 13        # under revocation.REVOCATIONS: one entry per withdrawn certificate
    NAME = 14              # under an AOR, in an enrolled overlay: the authority's tickets (names.py), one per key


MODEL_OF = {Kind.BLOB: DataModel.SINGLE, Kind.LIST: DataModel.ARRAY, Kind.MAP: DataModel.DICTIONARY,
            Kind.SIP_REGISTRATION: DataModel.DICTIONARY, Kind.OFFLINE_MESSAGE: DataModel.ARRAY,
            Kind.GATEWAY: DataModel.DICTIONARY, Kind.REVOCATION: DataModel.DICTIONARY,
            Kind.NAME: DataModel.DICTIONARY}


def lifetime_max_s(kind: int) -> int:
    """The longest a value of `kind` may be stored for; a longer lifetime is cut to it."""
    return REGISTRATION_LIFETIME_S_MAX if kind == Kind.SIP_REGISTRATION else LIFETIME_S_MAX


class RecordError(ValueError):
    """A stored record that does not decode: treated as absent, never raised further."""


@dataclass(frozen=True)
class Registration:
    """Where an AOR is reachable: its contact, and the SIP front (and node) serving it.

    `reachable` is False when the front cannot be sent to directly (a client behind
    NAT): requests then travel through the overlay to `node_id` (a Tunnel request), and
    through `via` first when that node is a client attached to the peer `via`.
    """

    contact: str
    front: Addr
    node_id: int
    reachable: bool = True
    via: int | None = None
    tls_port: int = 0  # the front also takes SIP over TLS there (0: it does not)

    def to_bytes(self) -> bytes:
        fields = {"c": self.contact, "h": self.front[0], "p": self.front[1], "n": format(self.node_id, "x"),
                  "r": self.reachable}
        if self.via is not None:
            fields["v"] = format(self.via, "x")
        if self.tls_port:
            fields["t"] = self.tls_port
        return _dump(fields)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Registration":
        d = _load(raw)
        contact, host, port, node, reachable, via, tls_port = (d.get(k) for k in ("c", "h", "p", "n", "r", "v", "t"))
        if not (isinstance(contact, str) and 0 < len(contact) <= URI_CHARS_MAX and isinstance(host, str)
                and 0 < len(host) <= HOST_CHARS_MAX and type(port) is int and 0 < port < 65536
                and isinstance(reachable, bool)
                and (tls_port is None or type(tls_port) is int and 0 < tls_port < 65536)):
            raise RecordError("bad registration record")
        return cls(contact, (host, port), _node_id(node), reachable, None if via is None else _node_id(via),
                   tls_port or 0)


@dataclass(frozen=True)
class OfflineMessage:
    """A MESSAGE kept for an AOR that was not online (seed 000, asynchronous messaging)."""

    sender: str
    content_type: str
    text: str

    def to_bytes(self) -> bytes:
        raw = _dump({"f": self.sender, "t": self.content_type, "b": self.text})
        if len(raw) > VALUE_BYTES_MAX:
            raise RecordError(f"message too long to keep (at most about {VALUE_BYTES_MAX - 100} bytes)")
        return raw

    @classmethod
    def from_bytes(cls, raw: bytes) -> "OfflineMessage":
        d = _load(raw)
        try:
            sender, content_type, text = d["f"], d["t"], d["b"]
        except KeyError:
            raise RecordError("bad offline message") from None
        if not (isinstance(sender, str) and len(sender) <= URI_CHARS_MAX and isinstance(content_type, str)
                and len(content_type) <= CONTENT_TYPE_CHARS_MAX and isinstance(text, str)):
            raise RecordError("bad offline message")
        return cls(sender, content_type, text)


def _dump(d: dict[str, object]) -> bytes:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()


def _load(raw: bytes) -> dict[str, object]:
    if len(raw) > VALUE_BYTES_MAX:
        raise RecordError("record too long")
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RecordError("record is not JSON") from None
    if not isinstance(d, dict):
        raise RecordError("record is not an object")
    return d


def _node_id(text: object) -> int:
    node_id = id_from_hex(text)
    if node_id is None:
        raise RecordError("bad registration record")
    return node_id
