"""RFC 4475 §3.1, the parser torture tests, against the front (sans-I/O, literal times).

The messages are ours, written to exercise what each of the RFC's does (its name in the
test id): the valid ones must be served like any request (forwarded, registered, answered),
the invalid ones answered as the RFC says (400, 505, or dropped) with nothing forwarded and
no transaction left behind. Where the RFC lets an element be liberal (baddate, badaspec) the
front is, and the test says so.
"""

from __future__ import annotations

import pytest
from peerphone.core.usages import Kind
from peerphone.sip.message import SipResponse, parse
from peerphone.sip.uri import Uri

from tests.sip.frontworld import DOMAIN, FRONT_PORT, PHONE, FrontWorld

BOB_PORT = PHONE + 1
SENDER = PHONE + 2


def wire(text: str, body: bytes = b"") -> bytes:
    """`text` with CRLF line ends; {length} becomes the body's length."""
    return text.replace("{length}", str(len(body))).replace("\n", "\r\n").encode() + body


def head(method: str, uri: str, *, cseq: str = "", extra: str = "", via: str = "") -> str:
    """A plain request head the cases bend one part of."""
    return (f"{method} {uri} SIP/2.0\n"
            f"Via: {via or f'SIP/2.0/UDP 127.0.0.1:{SENDER};branch=z9hG4bK{abs(hash((method, uri, extra))):x}'}\n"
            f"Max-Forwards: 70\nFrom: <sip:alice@{DOMAIN}>;tag=7a\nTo: <sip:bob@{DOMAIN}>\n"
            f"Call-ID: torture-{abs(hash((method, uri, extra))):x}\nCSeq: {cseq or f'1 {method}'}\n{extra}"
            "Content-Length: {length}\n\n")


@pytest.fixture
def world() -> FrontWorld:
    world = FrontWorld()
    world.register("bob", port=BOB_PORT, expires=600)
    return world


def forwarded_to_bob(world: FrontWorld) -> list:
    sent = world.take()
    return [m for m, link in sent if link.addr == ("127.0.0.1", BOB_PORT) and not isinstance(m, SipResponse)]


# -------------------------------------------------------------------------- §3.1.1 valid

def test_wsinv_whitespace_folding_compact_forms_and_escapes_everywhere(world):
    raw = wire(f"INVITE sip:bob@{DOMAIN};unknownparam SIP/2.0\n"
               f"TO :\n <sip:bob@{DOMAIN}>   ;   tag    = 1918181833n\n"
               f'f: "Alice \\\\\\""       <sip:alice@{DOMAIN}>\n  ;\n  tag = 98asjd8\n'
               "MaX-fOrWaRdS: 0068\n"
               "Call-ID: wsinv.ndaksdj@192.0.2.1\n"
               "Content-Length   : {length}\n"
               "cseq: 0009\n  INVITE\n"
               f"Via  : SIP  /   2.0\n /UDP\n    127.0.0.1:{SENDER};branch=z9hG4bK390skdjuw\n"
               "s :\n"
               "NewFangledHeader:   newfangled value\n continued newfangled value\n"
               "UnknownHeaderWithUnusualValue: ;;,,;;,;\n"
               "Content-Type: application/sdp\n"
               "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\n  branch  =   z9hG4bK9ikj8  ,\n"
               " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\n z9hG4bK30239\n"
               'm:"Quoted string \\"\\"" <sip:alice@127.0.0.1:5999> ; newparam =\n      newvalue ;\n'
               "  secondparam ; q = 0.33\n\n", b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\n")
    world.send(raw, SENDER)
    [invite] = forwarded_to_bob(world)
    assert invite.method == "INVITE" and invite.max_forwards() == 67  # 0068, less our hop
    assert invite.get("newfangledheader") == "newfangled value continued newfangled value"
    assert invite.body.startswith(b"v=0") and invite.cseq() == (9, "INVITE")
    assert len(invite.get_all("via")) == 4  # ours on top of all three


def test_intmeth_a_method_and_user_of_every_allowed_character(world):
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    user = "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    raw = wire(head(method, f"sip:{user}@{DOMAIN}", extra="extensionHeader-!.%*+_`'~: \U0001f4de\n"))
    message = parse(raw)
    assert message.method == method and Uri.parse(message.uri).host == DOMAIN
    world.send(raw, SENDER)
    assert world.statuses() == [404]  # looked up as the AOR it names, and nobody has it


def test_esc01_escaped_characters_are_the_characters(world):
    raw = wire(head("INVITE", f"sip:%62o%62@{DOMAIN}",
                    extra=f"Contact: <sip:%61lice@127.0.0.1:{SENDER};%6C%72>\n"))
    world.send(raw, SENDER)
    [invite] = forwarded_to_bob(world)  # %62o%62 is bob
    assert invite.uri == f"sip:bob@127.0.0.1:{BOB_PORT}"


def test_escnull_an_escaped_nul_is_kept_escaped_and_registers(world):
    user = "nul-%00-nul"
    raw = wire(f"REGISTER sip:{DOMAIN} SIP/2.0\n"
               f"To: <sip:{user}@{DOMAIN}>\nFrom: <sip:{user}@{DOMAIN}>;tag=839923423\n"
               f"Max-Forwards: 70\nCall-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd\nCSeq: 14398234 REGISTER\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{SENDER};branch=z9hG4bKkdjuw\n"
               f"Contact: <sip:%00@127.0.0.1:{SENDER}>\nContact: <sip:%00%00@127.0.0.1:{SENDER}>\n"
               "Expires: 300\nL:{length}\n\n")
    world.send(raw, SENDER)
    [ok] = world.responses()
    assert ok.status == 200 and len(ok.get_all("contact")) == 2
    assert len(world.fetch(f"sip:{user}@{DOMAIN}", Kind.SIP_REGISTRATION).entries) == 2


def test_esc02_an_escaped_method_name_is_another_method(world):
    raw = wire(head("RE%47IST%45R", f"sip:{DOMAIN}", extra=f"Contact: <sip:bob@127.0.0.1:{SENDER}>\n"))
    world.send(raw, SENDER)
    assert world.statuses() == [501]  # not a REGISTER: nobody was bound
    world.send(wire(head("INVITE", f"sip:bob@{DOMAIN}")), SENDER)
    assert forwarded_to_bob(world)


def test_lwsdisp_no_space_between_display_name_and_address(world):
    raw = wire(head("OPTIONS", f"sip:127.0.0.1:{FRONT_PORT}").replace(
        f"From: <sip:alice@{DOMAIN}>", f"From: caller<sip:alice@{DOMAIN}>"))
    world.send(raw, SENDER)
    assert world.statuses() == [200]


def test_longreq_long_values_everywhere_within_the_bounds(world):
    vias = "".join(f"Via: SIP/2.0/UDP host{i}.example.com;branch=z9hG4bK{'a' * 40}{i}\n" for i in range(12))
    raw = wire(f"INVITE sip:bob@{DOMAIN} SIP/2.0\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{SENDER};branch=z9hG4bKlong{'0' * 60}\n{vias}"
               f'To: "I have a user name of {"extreme " * 40}proportion" <sip:bob@{DOMAIN}>\n'
               f"From: <sip:alice@{DOMAIN}>;tag={'f' * 200}\n"
               f"Call-ID: {'longreq' * 40}\nCSeq: 1 INVITE\nMax-Forwards: 70\n"
               f"{'Unknown-Long-Name' * 10}: {'unknown-long-value;' * 60}x\n"
               "Content-Length: {length}\n\n")
    assert len(raw) > 3000  # past the 1,300 bytes a datagram should keep under (§18.1.1)
    world.send(raw, SENDER)
    [invite] = forwarded_to_bob(world)
    assert len(invite.get_all("via")) == 14 and invite.get("call-id") == "longreq" * 40


def test_dblreq_a_second_request_in_the_datagram_is_ignored(world):
    register = wire(head("REGISTER", f"sip:{DOMAIN}", extra=f"Contact: <sip:bob@127.0.0.1:{BOB_PORT}>\n"))
    invite = wire(head("INVITE", f"sip:bob@{DOMAIN}"))
    world.send(register + invite, SENDER)
    sent = world.take()
    assert [m.status for m, _ in sent if isinstance(m, SipResponse)] == [200]
    assert [m for m, _ in sent if not isinstance(m, SipResponse)] == []


def test_semiuri_a_semicolon_in_the_user_part(world):
    raw = wire(head("OPTIONS", f"sip:user;par=u%40example.net@{DOMAIN}"))
    uri = Uri.parse(parse(raw).uri)  # type: ignore[union-attr]
    assert (uri.user, uri.host) == ("user;par=u%40example.net", DOMAIN)
    world.send(raw, SENDER)
    assert world.statuses() == [404]  # an AOR of this domain, not registered


def test_transports_vias_of_every_transport_are_kept(world):
    vias = [f"SIP/2.0/{transport} t{i}.example.com;branch=z9hG4bK{i}kdjuw"
            for i, transport in enumerate(["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"])]
    raw = wire(head("OPTIONS", f"sip:127.0.0.1:{FRONT_PORT}", via=vias[0]).replace(
        f"Via: {vias[0]}\n", "".join(f"Via: {v}\n" for v in vias)))
    world.send(raw, SENDER)
    [ok] = world.responses()
    assert ok.status == 200 and ok.get_all("via")[1:] == vias[1:]


def test_mpart01_a_multipart_body_with_binary_bytes_is_forwarded_byte_for_byte(world):
    body = (b"--boundary42\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n"
            b"--boundary42\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            + bytes(range(256)) + b"\r\n--boundary42--\r\n")
    raw = wire(head("MESSAGE", f"sip:bob@{DOMAIN}",
                    extra='Content-Type: multipart/mixed;boundary=boundary42\n'), body)
    world.send(raw, SENDER)
    [message] = forwarded_to_bob(world)
    assert message.body == body


UNUSUAL_REASON = "= 2**3 * 5**2 но сто девяносто девять - простое"


@pytest.mark.parametrize("name,status_line,reason", [
    ("unreason", f"SIP/2.0 200 {UNUSUAL_REASON}", UNUSUAL_REASON),
    ("noreason", "SIP/2.0 100 ", ""),
])
def test_unreason_and_noreason_reason_phrases_of_any_text_or_none(world, name, status_line, reason):
    raw = wire(f"{status_line}\nVia: SIP/2.0/UDP 127.0.0.1:{FRONT_PORT};branch=z9hG4bK-{name}\n"
               f"From: <sip:alice@{DOMAIN}>;tag=1\nTo: <sip:bob@{DOMAIN}>;tag=2\nCall-ID: {name}\nCSeq: 1 INVITE\n"
               "Content-Length: {length}\n\n")
    response = parse(raw)
    assert isinstance(response, SipResponse) and response.reason == reason
    world.send(raw, BOB_PORT)  # no transaction of ours: dropped, quietly
    assert world.take() == [] and world.front.counters["sip internal errors"] == 0


# -------------------------------------------------------------------------- §3.1.2 invalid

INVITE = f"sip:bob@{DOMAIN}"
INVALID = {
    "badinv01": (wire(head("INVITE", INVITE, via=f"SIP/2.0/UDP 127.0.0.1:{SENDER};;,;,,")), 400),
    "badinv01-contact": (wire(head("INVITE", INVITE, extra=f"Contact: <sip:alice@127.0.0.1:{SENDER}>;;\n")), 400),
    "clerr": (wire(head("INVITE", INVITE).replace("{length}", "9999"), b"v=0\r\n"), 400),
    "scalar02": (wire(head("INVITE", INVITE).replace("{length}", "-999")), 400),
    "scalarlg": (wire(head("REGISTER", f"sip:{DOMAIN}", cseq="36893488147419103232 REGISTER",
                           extra=f"Contact: <sip:bob@127.0.0.1:{SENDER}>;expires=280297596632815\n"
                                 "Expires: 10000000000000000000000\n")), 400),
    "scalarlg-forwards": (wire(head("INVITE", INVITE).replace("Max-Forwards: 70", "Max-Forwards: 300")), 400),
    "quotbal": (wire(head("INVITE", INVITE).replace(f"To: <sip:bob@{DOMAIN}>",
                                                    f'To: "Mr. J. User <sip:bob@{DOMAIN}>')), 400),
    "ltgtruri": (wire(head("INVITE", f"<{INVITE}>")), 400),
    "lwsruri": (wire(head("INVITE", f"{INVITE}; lr")), 400),
    "lwsstart": (wire(head("INVITE", INVITE).replace(f"INVITE {INVITE} SIP/2.0", f"INVITE  {INVITE}  SIP/2.0")),
                 400),
    "trws": (wire(head("OPTIONS", INVITE).replace(" SIP/2.0\n", " SIP/2.0  \n", 1)), 400),
    "escruri": (wire(head("INVITE", f"{INVITE}?Route=%3Csip:example.com%3E")), 400),
    "regbadct": (wire(head("REGISTER", f"sip:{DOMAIN}",
                           extra=f"Contact: sip:bob@127.0.0.1:{SENDER}?Route=%3Csip:sip.example.com%3E\n")), 400),
    "baddn": (wire(head("INVITE", INVITE).replace(f"From: <sip:alice@{DOMAIN}>",
                                                  f"From: Bell, Alexander <sip:alice@{DOMAIN}>")), 400),
    "badvers": (wire(head("OPTIONS", INVITE).replace(" SIP/2.0\n", " SIP/7.0\n", 1)), 505),
    "mismatch01": (wire(head("OPTIONS", INVITE, cseq="8 INVITE")), 400),
    "mismatch02": (wire(head("NEWMETHOD", INVITE, cseq="8 INVITE")), 400),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_requests_are_answered_as_the_rfc_says_and_go_nowhere(world, name):
    raw, status = INVALID[name]
    world.send(raw, SENDER)
    sent = world.take()
    assert [(m.status, link.addr) for m, link in sent] == [(status, ("127.0.0.1", SENDER))]
    assert isinstance(sent[0][0], SipResponse) and sent[0][0].get("call-id") == parse_call_id(raw)
    assert len(world.sent) == 0 and world.front.counters["sip internal errors"] == 0
    assert world.fetch(f"sip:bob@{DOMAIN}", Kind.SIP_REGISTRATION).entries[0].lifetime_s == 600  # bob unchanged
    world.advance(64_000)
    assert world.front.transactions == 0


def parse_call_id(raw: bytes) -> str:
    return next(line.split(b":", 1)[1].strip().decode() for line in raw.split(b"\r\n")
                if line.lower().startswith(b"call-id:"))


def test_bigcode_a_status_code_past_699_is_dropped(world):
    raw = wire(f"SIP/2.0 4294967301 better not break the receiver\nVia: SIP/2.0/UDP 127.0.0.1:{FRONT_PORT};"
               f"branch=z9hG4bK-big\nFrom: <sip:alice@{DOMAIN}>;tag=1\nTo: <sip:bob@{DOMAIN}>;tag=2\n"
               "Call-ID: bigcode\nCSeq: 1 INVITE\nContent-Length: {length}\n\n")
    world.send(raw, BOB_PORT)
    assert world.take() == [] and world.front.counters["sip dropped: unparseable"] == 1


@pytest.mark.parametrize("name,bend", [
    ("baddate", lambda raw: raw.replace(b"Max-Forwards", b"Date: Fri, 01 Jan 2010 16:00:00 EST\r\nMax-Forwards")),
    ("badaspec", lambda raw: raw.replace(f"To: <sip:bob@{DOMAIN}>".encode(), f"To: < sip:bob@{DOMAIN} >".encode())),
])
def test_baddate_and_badaspec_are_served_as_the_rfc_allows_a_liberal_element(world, name, bend):
    world.send(bend(wire(head("INVITE", INVITE))), SENDER)
    assert forwarded_to_bob(world)  # the Date is never read; the spaces inside <> are ignored
