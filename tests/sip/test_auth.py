"""Digest authentication of REGISTER at a front with users (issue 15), sans-I/O. The digest
answers are computed here from RFC 7616's formulas, not with the front's code."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.core.usages import Kind
from peerphone.sip.auth import FAILURES_BURST, NONCE_LIFETIME_MS, parse_digest
from peerphone.sip.message import SipResponse

from tests.sip.frontworld import DOMAIN, PHONE, FrontWorld
from tests.sip.raw import register as raw_register
from tests.sip.raw import request as raw_request

BOB = f"sip:bob@{DOMAIN}"
USERS = {BOB: "bob's secret", f"sip:carol@{DOMAIN}": "carol's"}
HASHES = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}


def authorization(challenge: str, user: str, password: str, *, algorithm: str = "SHA-256",
                  uri: str = f"sip:{DOMAIN}", method: str = "REGISTER") -> str:
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params["realm"], params["nonce"]

    def h(text: str) -> str:
        return HASHES[algorithm](text.encode()).hexdigest()

    ha1, ha2, cnonce = h(f"{user}:{realm}:{password}"), h(f"{method}:{uri}"), "0a4f113b"
    response = h(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}", '
            f'algorithm={algorithm}, qop=auth, nc=00000001, cnonce="{cnonce}"')


def register(world: FrontWorld, user: str, auth: str | None = None, port: int = PHONE) -> SipResponse:
    data = raw_register(port, user, port, domain=DOMAIN)
    if auth is not None:
        data = data.replace(b"Content-Length:", f"Authorization: {auth}\r\nContent-Length:".encode())
    world.send(data, port)
    answers = [m for m, _ in world.take() if isinstance(m, SipResponse)]
    assert len(answers) == 1, answers
    return answers[0]


def challenges(answer: SipResponse, header: str = "www-authenticate") -> list[str]:
    return [v for n, v in answer.headers if n.lower() == header]  # whole: get_all splits at commas


def challenge_of(answer: SipResponse, algorithm: str = "SHA-256", header: str = "www-authenticate") -> str:
    return next(v for v in challenges(answer, header) if f"algorithm={algorithm}" in v)


def test_a_register_is_challenged_then_taken_with_the_password_in_sha_256_or_md5():
    world = FrontWorld(users=USERS)
    first = register(world, "bob")
    assert first.status == 401
    assert [v.split("algorithm=")[1].split(",")[0] for v in challenges(first)] == ["SHA-256", "MD5"]
    assert world.fetch(BOB, Kind.SIP_REGISTRATION).model is None  # nothing stored for a challenge
    for algorithm in HASHES:
        answer = register(world, "bob", authorization(challenge_of(first, algorithm), "bob", "bob's secret",
                                                      algorithm=algorithm))
        assert answer.status == 200, algorithm
    assert world.fetch(BOB, Kind.SIP_REGISTRATION).entries


def test_a_wrong_password_or_another_user_s_name_is_refused_and_stores_nothing():
    world = FrontWorld(users=USERS)
    challenge = challenge_of(register(world, "bob"))
    assert register(world, "bob", authorization(challenge, "bob", "guess")).status == 403
    # Carol's own password, in a REGISTER for Bob:
    assert register(world, "bob", authorization(challenge, "carol", "carol's")).status == 403
    assert world.fetch(BOB, Kind.SIP_REGISTRATION).model is None
    assert world.front.counters["refused.sip_password"] == 2


def test_a_user_the_front_does_not_hold_is_refused_without_a_challenge():
    world = FrontWorld(users=USERS)
    assert register(world, "mallory").status == 403
    assert world.front.counters["refused.sip_user"] == 1
    assert world.ring.nodes  # and the overlay was not asked
    assert world.fetch(f"sip:mallory@{DOMAIN}", Kind.SIP_REGISTRATION).model is None


def test_a_stale_nonce_gets_a_fresh_challenge_not_a_refusal():
    world = FrontWorld(users=USERS)
    challenge = challenge_of(register(world, "bob"))
    world.advance(NONCE_LIFETIME_MS + 1000)
    answer = register(world, "bob", authorization(challenge, "bob", "bob's secret"))
    assert answer.status == 401 and "stale=true" in challenge_of(answer)
    assert register(world, "bob", authorization(challenge_of(answer), "bob", "bob's secret")).status == 200


def test_a_forged_nonce_is_only_challenged():
    world = FrontWorld(users=USERS)
    challenge = challenge_of(register(world, "bob")).replace('nonce="', 'nonce="1')
    assert register(world, "bob", authorization(challenge, "bob", "bob's secret")).status == 401


def test_a_guesser_is_slowed_and_the_real_user_from_another_host_is_not():
    world = FrontWorld(users=USERS)
    challenge = challenge_of(register(world, "bob"))
    guesses = [register(world, "bob", authorization(challenge, "bob", f"guess{i}")).status for i in range(100)]
    assert guesses == [403] * 100
    assert world.front.counters["refused.sip_password"] == FAILURES_BURST
    assert world.front.counters["refused.sip_guessing"] == 100 - FAILURES_BURST
    # The right password from the guesser's host is slowed too, until its bucket refills...
    assert register(world, "bob", authorization(challenge, "bob", "bob's secret")).status == 403
    # ... but Bob's phone on its own host registers at once.
    world.send(raw_register(PHONE + 1, "bob", PHONE + 1, domain=DOMAIN).replace(
        b"Content-Length:", f"Authorization: {authorization(challenge, 'bob', 'bob' + chr(39) + 's secret')}\r\n"
        "Content-Length:".encode()), PHONE + 1, host="127.0.0.2")
    assert [m.status for m, _ in world.take() if isinstance(m, SipResponse)] == [200]
    world.advance(10_000)
    assert register(world, "bob", authorization(challenge, "bob", "bob's secret")).status == 200


CAROL = f"sip:carol@{DOMAIN}"
STRANGER = PHONE + 7


def with_carol() -> FrontWorld:
    """A front with users, Carol's phone registered at it with her password."""
    world = FrontWorld(users=USERS)
    assert register(world, "carol", authorization(challenge_of(register(world, "carol")), "carol", "carol's")
                    ).status == 200
    return world


def invite(world: FrontWorld, caller: str, auth: str | None = None, *, domain: str = DOMAIN, **link: Any) -> None:
    """An INVITE from `caller`@`domain` to Carol, from the stranger's port unless `link` says."""
    extra = f"Proxy-Authorization: {auth}\r\n" if auth else ""
    world.send(raw_request("INVITE", CAROL, STRANGER, sender=f"sip:{caller}@{domain}", extra=extra),
               link.pop("port", STRANGER), **link)


def test_a_call_as_a_user_of_the_front_must_prove_it_as_a_register_does():
    world = with_carol()
    invite(world, "bob")  # a stranger, as Bob
    first = [m for m in world.responses() if m.status != 100]
    assert [m.status for m in first] == [407]
    challenge = challenge_of(first[0], header="proxy-authenticate")
    invite(world, "bob", authorization(challenge, "bob", "guess", uri=CAROL, method="INVITE"))
    assert world.statuses() == [100, 403] and world.front.counters["refused.sip_password"] == 1
    invite(world, "bob", authorization(challenge, "bob", "bob's secret", uri=CAROL, method="REGISTER"))
    assert world.statuses() == [100, 403]  # an answer for another method proves nothing here
    invite(world, "mallory")  # of the domain, not a user of this front
    assert world.statuses() == [100, 403] and world.front.counters["refused.sip_user"] == 1
    gateways = 'Digest username="b0b", realm="gateway.example", nonce="n", uri="x", response="r"'
    invite(world, "bob", gateways + "\r\nProxy-Authorization: "  # a proxy's after us first (RFC 3261 §22.3)
           + authorization(challenge, "bob", "bob's secret", uri=CAROL, method="INVITE"))
    (forwarded, to_carol), = world.requests()
    assert forwarded.method == "INVITE" and to_carol.addr == ("127.0.0.1", PHONE)
    assert [v for n, v in forwarded.headers if n.lower() == "proxy-authorization"] == [gateways]  # ours used here


def test_a_to_tag_makes_no_dialog_of_ours_but_our_route_does():
    world = with_carol()
    invite(world, "bob")
    challenge = challenge_of(next(m for m in world.responses() if m.status == 407), header="proxy-authenticate")
    invite(world, "bob", authorization(challenge, "bob", "bob's secret", uri=CAROL, method="INVITE"))
    (forwarded, _), = world.requests()
    routes = ", ".join(forwarded.get_all("record-route"))
    carol_contact, call_id = f"sip:carol@127.0.0.1:{PHONE}", (forwarded.get("call-id") or "").removesuffix("@test")

    def message(extra: str) -> bytes:
        return raw_request("MESSAGE", carol_contact, STRANGER, to=CAROL, sender=f"sip:bob@{DOMAIN}", extra=extra,
                           body=b"hi", call_id=call_id).replace(f"To: <{CAROL}>".encode(),
                                                                f"To: <{CAROL}>;tag=c4".encode())

    world.send(message(""), STRANGER)  # as if in a dialog: a stranger's, as Bob
    assert world.statuses() == [407]
    world.send(message(f"Route: {routes}\r\n"), STRANGER)  # in the dialog Bob's INVITE made here
    assert [(m.method, link.addr) for m, link in world.requests()] == [("MESSAGE", ("127.0.0.1", PHONE))]


def test_a_call_another_front_proved_it_sends_or_from_another_domain_is_not_challenged():
    world = with_carol()
    invite(world, "bob", transport="TLS", node_id=0xF0)  # a front's TLS: it proved node f0
    assert [m.method for m, _ in world.requests()] == ["INVITE"]
    invite(world, "bob", transport="TUNNEL", node_id=0xF1, port=0)  # through the overlay from node f1
    assert [m.method for m, _ in world.requests()] == ["INVITE"]
    invite(world, "bob", transport="TLS", port=STRANGER + 1)  # a phone's TLS proves nobody
    assert 407 in world.statuses()
    invite(world, "+4930123", domain="gateway.example", port=STRANGER + 2)  # nobody of ours to speak as
    assert [m.method for m, _ in world.requests()] == ["INVITE"]


def test_a_front_without_users_registers_anyone_as_before():
    world = FrontWorld()
    assert register(world, "anyone").status == 200


@settings(max_examples=500)
@given(st.text(max_size=300) | st.builds(lambda parts: "Digest " + ", ".join(parts), st.lists(
    st.builds(lambda k, v, q: f'{k}={q}{v}{q}', st.sampled_from(["nonce", "response", "realm", "uri", "x", ""]),
              st.text(max_size=20), st.sampled_from(['"', ""])), max_size=20)))
def test_parsing_an_authorization_never_raises(value):
    params = parse_digest(value)
    assert params is None or ("nonce" in params and "response" in params)
