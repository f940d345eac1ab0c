"""Message bodies by Content-Type and Content-Encoding: text, IMDN receipts (plain, deflated,
wrapped in CPIM), and hostile bodies that are never shown as bytes and never raise."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from peerphone.sip.content import INFLATED_BYTES_MAX, Opaque, Receipt, Text, describe, understand

RECEIPT = b"""<?xml version="1.0" encoding="UTF-8"?>
<imdn xmlns="urn:ietf:params:xml:ns:imdn">
  <message-id>34jk324j</message-id>
  <datetime>2026-12-02T12:16:49Z</datetime>
  <display-notification><status><displayed/></status></display-notification>
</imdn>"""


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def test_text_is_shown_as_text_whatever_its_charset_says():
    assert understand("text/plain;charset=UTF-8", None, "grüß dich".encode()) == Text("grüß dich")
    assert understand(None, None, b"no type: text/plain") == Text("no type: text/plain")  # RFC 3428's default
    assert understand("text/plain", None, b"\xff\xfe bad") == Text("\ufffd\ufffd bad")


@pytest.mark.parametrize("encode", [lambda b: b, zlib.compress, raw_deflate], ids=["plain", "zlib", "raw-deflate"])
def test_a_display_receipt_is_understood_however_it_is_deflated(encode):
    encoding = None if encode(b"x") == b"x" else "deflate"
    content = understand("message/imdn+xml", encoding, encode(RECEIPT))
    assert content == Receipt("34jk324j", "display", "displayed")
    assert describe(content) == "display receipt: displayed (message 34jk324j)"


def test_a_receipt_in_a_cpim_wrapper_as_linphone_sends_it():
    delivered = RECEIPT.replace(b"display-notification><status><displayed/>",
                                b"delivery-notification><status><delivered/>")
    cpim = (b"From: <sip:bob@peerphone.local>\r\nTo: <sip:alice@peerphone.local>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
            b"\r\nContent-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\r\n"
            + delivered.replace(b"</display-notification>", b"</delivery-notification>"))
    assert understand("message/cpim", "deflate", zlib.compress(cpim)) == Receipt("34jk324j", "delivery", "delivered")


@pytest.mark.parametrize("content_type,encoding,body,why", [
    ("message/imdn+xml", "deflate", zlib.compress(b"<a/>" * (INFLATED_BYTES_MAX // 2)), "do not inflate"),  # a bomb
    ("message/imdn+xml", "deflate", b"not deflated", "do not inflate"),
    ("message/imdn+xml", "gzip", b"\x1f\x8b", "in gzip"),
    ("message/imdn+xml", None, b'<!DOCTYPE x [<!ENTITY a "aaaa">]><imdn>&a;</imdn>', "document type"),
    ("message/imdn+xml", None, b"<imdn", "not XML"),
    ("message/imdn+xml", None, b"<other/>", "without an imdn element"),
    ("message/imdn+xml", None, b'<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>1</message-id></imdn>',
     "without a notification"),
    ("message/cpim", None, b"From: x\r\n\r\nno second block", "two header blocks"),
    ("application/octet-stream", None, b"\x00\x01\x02", "application/octet-stream, 3 bytes"),
])
def test_what_cannot_be_read_is_named_not_printed(content_type, encoding, body, why):
    content = understand(content_type, encoding, body)
    assert isinstance(content, Opaque) and why in content.why
    assert describe(content).endswith(", not shown)")


@given(st.one_of(st.none(), st.sampled_from(["text/plain", "message/imdn+xml", "message/cpim", "image/png"]),
                 st.text(max_size=30)),
       st.one_of(st.none(), st.sampled_from(["deflate", "identity", "br"]), st.text(max_size=10)),
       st.binary(max_size=600))
def test_the_reader_never_raises_whatever_the_body(content_type, encoding, body):
    content = understand(content_type, encoding, body)
    assert isinstance(describe(content), str)
