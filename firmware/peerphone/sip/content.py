"""What an instant message holds, by its Content-Type and Content-Encoding: text to show, an
IMDN receipt (RFC 5438: delivered, displayed...), or something not shown.

linphone sends a `message/imdn+xml` receipt for every message it receives, often deflated
(`Content-Encoding: deflate`) and sometimes wrapped in CPIM (RFC 3862); printed as they
come, they are bytes on a person's screen. Every body is hostile: sizes are bounded before
and after inflating, XML with a document type is refused (entity expansion), and nothing
here raises: what cannot be understood is `Opaque`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from xml.etree import ElementTree

from .message import BODY_BYTES_MAX

INFLATED_BYTES_MAX = 4 * BODY_BYTES_MAX  # a receipt is a few hundred bytes; a bomb stops here
IMDN_NS = "{urn:ietf:params:xml:ns:imdn}"
NOTIFICATIONS = {"delivery-notification": "delivery", "display-notification": "display",
                 "processing-notification": "processing"}


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Receipt:
    """A disposition notification: `what` (delivery, display, processing) of `message_id` is `status`."""

    message_id: str
    what: str
    status: str


@dataclass(frozen=True)
class Opaque:
    """Not shown: its type and size, or why it could not be read."""

    why: str


Content = Text | Receipt | Opaque


def understand(content_type: str | None, encoding: str | None, body: bytes) -> Content:
    """What a MESSAGE's body says (`content_type` and `encoding` as the headers give them)."""
    media = (content_type or "text/plain").split(";")[0].strip().lower()
    coding = (encoding or "identity").strip().lower()
    if coding == "deflate":
        inflated = _inflate(body)
        if inflated is None:
            return Opaque(f"{media}, {len(body)} bytes that do not inflate")
        body = inflated
    elif coding not in ("identity", ""):
        return Opaque(f"{media} in {coding}, {len(body)} bytes")
    if media == "message/cpim":
        return _cpim(body)
    if media.startswith("text/"):
        return Text(body.decode("utf-8", errors="replace"))
    if media == "message/imdn+xml":
        return _imdn(body)
    return Opaque(f"{media}, {len(body)} bytes")


def _inflate(body: bytes) -> bytes | None:
    """zlib or raw deflate (both are sent as "deflate"), at most INFLATED_BYTES_MAX."""
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, INFLATED_BYTES_MAX)
        except zlib.error:
            continue
        if inflater.unconsumed_tail or not inflater.eof:
            return None  # larger than we take, or cut short
        return out
    return None


def _imdn(body: bytes) -> Content:
    if b"<!" in body:  # a DOCTYPE or ENTITY: IMDN has none, entity bombs do
        return Opaque("message/imdn+xml with a document type")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return Opaque("message/imdn+xml that is not XML")
    if root.tag != f"{IMDN_NS}imdn":
        return Opaque("message/imdn+xml without an imdn element")
    message_id = (root.findtext(f"{IMDN_NS}message-id") or "").strip()
    for element, what in NOTIFICATIONS.items():
        notification = root.find(f"{IMDN_NS}{element}")
        if notification is None:
            continue
        status = notification.find(f"{IMDN_NS}status")
        if status is None or not len(status):
            return Opaque(f"message/imdn+xml {what} notification without a status")
        return Receipt(message_id, what, status[0].tag.removeprefix(IMDN_NS))
    return Opaque("message/imdn+xml without a notification")


def _cpim(body: bytes) -> Content:
    """The message inside a CPIM wrapper: message headers, a blank line, MIME headers, a
    blank line, the content (RFC 3862 section 2)."""
    parts = body.split(b"\r\n\r\n", 2)
    if len(parts) != 3:
        return Opaque("message/cpim without its two header blocks")
    content_type = encoding = None
    for line in parts[1].split(b"\r\n"):
        name, _, value = line.decode("utf-8", errors="replace").partition(":")
        if name.strip().lower() == "content-type":
            content_type = value.strip()
        elif name.strip().lower() == "content-encoding":
            encoding = value.strip()
    if (content_type or "").split(";")[0].strip().lower() == "message/cpim":
        return Opaque("message/cpim inside message/cpim")
    return understand(content_type, encoding, parts[2])


def describe(content: Content) -> str:
    """How a phone says it: the text itself, or what the receipt or the opaque body is."""
    if isinstance(content, Text):
        return content.text
    if isinstance(content, Receipt):
        return f"{content.what} receipt: {content.status} (message {content.message_id or '?'})"
    return f"({content.why}, not shown)"
