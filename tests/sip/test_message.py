"""The SIP parser: real messages, a corpus of broken ones, round trips and fuzzing."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.sip.message import (
    BODY_BYTES_MAX,
    HEADERS_MAX,
    MESSAGE_BYTES_MAX,
    SipParseError,
    SipRequest,
    SipResponse,
    check_request,
    parse,
)
from peerphone.sip.uri import Uri

INVITE = (
    b"INVITE sip:bob@overlay.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKx\r\n"
    b"v: SIP/2.0/TCP 10.0.0.2;branch=z9hG4bKq\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob, the builder" <sip:bob@overlay.example>\r\n'
    b"f: Alice <sip:alice@overlay.example>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Subject: a long\r\n"
    b"  folded subject\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\nEXTRA"
)


def test_a_real_invite_parses_with_compact_forms_folding_and_lists():
    msg = parse(INVITE)
    assert isinstance(msg, SipRequest)
    assert (msg.method, msg.uri) == ("INVITE", "sip:bob@overlay.example")
    assert msg.get_all("via") == ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds",
                                  "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKx", "SIP/2.0/TCP 10.0.0.2;branch=z9hG4bKq"]
    assert msg.get("FROM") == "Alice <sip:alice@overlay.example>;tag=1928301774"
    assert msg.get_all("to") == ['"Bob, the builder" <sip:bob@overlay.example>']  # no split inside quotes
    assert msg.get("subject") == "a long folded subject"
    assert msg.cseq() == (314159, "INVITE") and msg.max_forwards() == 70
    assert msg.body == b"v=0\n"  # Content-Length decides; the rest of the datagram is dropped
    check_request(msg)


def test_a_response_parses_and_serializes_back():
    raw = (b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa\r\nTo: <sip:b@x>;tag=2\r\n"
           b"From: <sip:a@x>;tag=1\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    msg = parse(raw)
    assert isinstance(msg, SipResponse) and (msg.status, msg.reason) == (180, "Ringing")
    assert msg.to_bytes() == raw


BROKEN = {
    b"": 400,
    b"INVITE sip:bob@x SIP/2.0\r\nVia: x\r\n": 400,  # no blank line
    b"INVITE sip:bob@x SIP/3.0\r\n\r\n": 505,
    b"INVITE  sip:bob@x SIP/2.0\r\n\r\n": 400,  # two spaces
    b"INVITE bob SIP/2.0\r\n\r\n": 400,  # not a URI
    b"INV(TE sip:bob@x SIP/2.0\r\n\r\n": 400,
    b"SIP/2.0 99 Low\r\n\r\n": 400,
    b"SIP/2.0 1000 High\r\n\r\n": 400,
    b"HELLO\r\n\r\n": 400,
    b"INVITE sip:bob@x SIP/2.0\r\nNo colon here\r\n\r\n": 400,
    b"INVITE sip:bob@x SIP/2.0\r\n continuation first\r\n\r\n": 400,
    b"INVITE sip:bob@x SIP/2.0\r\nBad Name: x\r\n\r\n": 400,
    b"INVITE sip:bob@x SIP/2.0\r\nContent-Length: -1\r\n\r\n": 400,
    b"INVITE sip:bob@x SIP/2.0\r\nContent-Length: 12\r\n\r\nshort": 400,
    b"INVITE sip:bob@x SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n": 400,
    b"INVITE sip:bob@x SIP/2.0\r\nSubject: \xff\xfe\r\n\r\n": 400,
    b"INVITE sip:bob@x SIP/2.0\r\nSubject: a\x00b\r\n\r\n": 400,
    b"INVITE sip:bob@x SIP/2.0\r\n" + b"X-A: b\r\n" * (HEADERS_MAX + 1) + b"\r\n": 400,
    b"INVITE sip:bob@x SIP/2.0\r\nX-A: " + b"a" * 5000 + b"\r\n\r\n": 400,
    b"INVITE sip:bob@x SIP/2.0\r\n\r\n" + b"b" * (BODY_BYTES_MAX + 1): 413,
    b"INVITE sip:bob@x SIP/2.0\r\n\r\n" + b"b" * MESSAGE_BYTES_MAX: 413,
}


@pytest.mark.parametrize("raw", list(BROKEN), ids=range(len(BROKEN)))
def test_broken_messages_are_refused_with_the_status_a_server_answers(raw):
    with pytest.raises(SipParseError) as refused:
        parse(raw)
    assert refused.value.status == BROKEN[raw]


@pytest.mark.parametrize("drop", ["Via", "To", "From", "Call-ID", "CSeq", "Max-Forwards"])
def test_a_request_without_a_mandatory_header_is_refused(drop):
    lines = [line for line in INVITE.split(b"\r\n") if not line.lower().startswith(drop.lower().encode() + b":")]
    if drop == "Via":
        lines = [line for line in lines if not line.startswith(b"v:")]
    if drop == "From":
        lines = [line for line in lines if not line.startswith(b"f:")]
    with pytest.raises(SipParseError):
        check_request(parse(b"\r\n".join(lines)))


@pytest.mark.parametrize("cseq,forwards", [("1 BYE", "70"), ("x INVITE", "70"), ("99999999999 INVITE", "70"),
                                           ("1 INVITE", "-1"), ("1 INVITE", "256"), ("1 INVITE", "seven")])
def test_bad_cseq_or_max_forwards_is_refused(cseq, forwards):
    raw = INVITE.replace(b"CSeq: 314159 INVITE", f"CSeq: {cseq}".encode())
    raw = raw.replace(b"Max-Forwards: 70", f"Max-Forwards: {forwards}".encode())
    with pytest.raises(SipParseError):
        check_request(parse(raw))


tokens = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)
printable = st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters=",", exclude_categories=("Cc",))
values = st.text(printable, min_size=1, max_size=40)


@given(st.from_regex(r"[A-Z]{3,9}", fullmatch=True), tokens,
       st.lists(st.tuples(tokens.filter(lambda t: t.lower() not in ("content-length", "l")), values), max_size=12),
       st.binary(max_size=300))
def test_every_request_round_trips(method, user, headers, body):
    msg = SipRequest(headers=headers, body=body, method=method, uri=f"sip:{user}@overlay.example")
    back = parse(msg.to_bytes())
    assert isinstance(back, SipRequest)
    assert (back.method, back.uri, back.body) == (method, msg.uri, body)
    assert back.headers[:-1] == headers and back.get("content-length") == str(len(body))


@settings(max_examples=3000)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_only_ever_raise_sip_parse_error(data):
    try:
        parse(data)
    except SipParseError as e:
        assert e.status in (400, 413, 505)


@settings(max_examples=2000)
@given(st.integers(0, len(INVITE) - 1), st.binary(min_size=1, max_size=8), st.integers(0, 8))
def test_a_mangled_invite_parses_or_is_refused_and_nothing_else(at, insert, cut):
    data = INVITE[:at] + insert + INVITE[at + cut:]
    try:
        msg = parse(data)
        if isinstance(msg, SipRequest):
            check_request(msg)
    except SipParseError:
        pass


def test_a_uri_without_a_port_takes_its_transport_s_default():
    assert Uri.parse("sip:bob@example.org").port_or_default == 5060
    assert Uri.parse("sip:bob@example.org;transport=TLS").port_or_default == 5061
    assert Uri.parse("sip:bob@example.org:7000;transport=tls").port_or_default == 7000
