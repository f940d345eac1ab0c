"""The SIP front, sans-I/O, on a real one-node overlay: no event loop, no socket, literal times."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.core.ids import id_from_name
from peerphone.core.usages import Kind, OfflineMessage, Registration
from peerphone.core.wire.messages import DataModel, Entry
from peerphone.sip import front as front_module
from peerphone.sip import tunnel
from peerphone.sip.front import (
    RESOLVING_MAX,
    RESOLVING_PER_SOURCE_MAX,
    Forwarded,
    Link,
    OverlayFetch,
    OverlayStore,
    OverlayTunnel,
)
from peerphone.sip.message import SipRequest, SipResponse
from peerphone.sip.uri import NameAddr

from tests.sip.frontworld import DOMAIN, FRONT_PORT, PHONE, FrontWorld, answer, request
from tests.sip.raw import register as raw_register
from tests.sip.test_message import BROKEN

BOB = f"sip:bob@{DOMAIN}"
OPTIONS_TO_FRONT = f"sip:127.0.0.1:{FRONT_PORT}"


def in_dialog(method: str, aor: str) -> bytes:
    """A request inside a dialog: its To has the far end's tag."""
    return request(method, aor).replace(f"To: <{aor}>".encode(), f"To: <{aor}>;tag=x".encode())


def forwarded(world: FrontWorld, method: str) -> tuple[SipRequest, Link]:
    """The one request of `method` the front has sent since the last look."""
    sent = [(m, link) for m, link in world.requests() if m.method == method]
    assert len(sent) == 1, sent
    return sent[0]


def test_register_stores_the_binding_in_the_overlay_echoes_its_parameters_and_expires_zero_removes_it():
    world = FrontWorld()
    ok = world.register("bob", extra_param=';+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"')
    assert ok.get("contact") == (f'<sip:bob@127.0.0.1:{PHONE}>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-'
                                 f'000A95A0E128>";expires=60')
    stored = world.fetch(BOB, Kind.SIP_REGISTRATION)
    record = Registration.from_bytes(stored.entries[0].value)
    assert record.contact == f"sip:bob@127.0.0.1:{PHONE}" and record.front == ("127.0.0.1", FRONT_PORT)
    assert stored.entries[0].lifetime_s == 60
    world.register("bob", expires=0)
    assert world.fetch(BOB, Kind.SIP_REGISTRATION).entries == ()


def test_a_request_to_a_registered_aor_reaches_its_contact_with_via_record_route_and_max_forwards():
    world = FrontWorld()
    world.register("bob", port=PHONE + 1)
    world.send(request("INVITE", BOB))
    sent = world.take()
    assert isinstance(sent[0][0], SipResponse) and sent[0][0].status == 100  # 100 Trying first, hop by hop
    invite, link = sent[1]
    assert isinstance(invite, SipRequest) and link == Link("UDP", ("127.0.0.1", PHONE + 1))
    assert invite.uri == f"sip:bob@127.0.0.1:{PHONE + 1}"  # the Request-URI is now the contact
    vias = invite.get_all("via")
    assert len(vias) == 2 and vias[0].startswith(f"SIP/2.0/UDP 127.0.0.1:{FRONT_PORT};branch=z9hG4bK")
    assert re.fullmatch(f"<sip:127.0.0.1:{FRONT_PORT};pp-rr=[0-9a-f]{{16}};lr>", invite.get("record-route") or "")
    assert invite.max_forwards() == 69
    routed = [e for e in world.front.events() if isinstance(e, Forwarded)]
    assert [(e.method, e.to) for e in routed] == [("INVITE", link)]


def test_unregistered_is_404_and_options_is_answered():
    world = FrontWorld()
    world.send(request("INVITE", f"sip:nobody@{DOMAIN}"))
    assert world.statuses() == [100, 404]
    world.send(request("OPTIONS", OPTIONS_TO_FRONT))
    options = world.responses()
    assert [r.status for r in options] == [200] and "INVITE" in (options[0].get("allow") or "")


def test_a_silent_callee_gets_its_invite_repeated_on_timer_a_and_the_caller_480_at_the_reach_timeout():
    world = FrontWorld()
    world.register("bob", port=PHONE + 1)
    invite = request("INVITE", BOB)
    world.send(invite)
    assert world.statuses() == [100]
    world.advance(3999)
    assert [m.method for m, _ in world.take()] == ["INVITE"] * 3  # sent again at +500 and +1500, then +3500
    world.advance(1)
    assert world.statuses() == [480]
    world.advance(500)
    assert world.statuses() == [480]  # Timer G: repeated until the caller's ACK comes
    world.send(invite.replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK"))
    world.advance(60_000)
    assert world.take() == []  # the branch has stopped and the ACK ended the 480's repetitions
    assert world.front.transactions == 0


def test_a_callee_that_rings_for_ever_is_cancelled_with_timer_c_and_the_caller_gets_408():
    world = FrontWorld()
    world.register("bob", port=PHONE + 1)
    world.send(request("INVITE", BOB))
    invite = next(m for m, _ in world.take() if isinstance(m, SipRequest))
    world.send(answer(invite, 180, "Ringing"), port=PHONE + 1)
    assert world.statuses() == [180]
    world.advance(179_999)
    assert world.take() == []
    world.advance(1)
    sent = world.take()
    assert [m.status for m, _ in sent if isinstance(m, SipResponse)] == [408]
    assert [(m.method, m.get("cseq")) for m, _ in sent if isinstance(m, SipRequest)] == [("CANCEL", "1 CANCEL")]
    world.send(answer(invite, 487, "Request Terminated"), port=PHONE + 1)
    sent = world.take()  # the 487 is ACKed by our client transaction and goes no further: 408 went up
    assert [(m.method, link.addr[1]) for m, link in sent if isinstance(m, SipRequest)] == [("ACK", PHONE + 1)]
    assert [m for m, _ in sent if isinstance(m, SipResponse)] == []


def test_max_forwards_zero_is_483_and_a_loop_is_482():
    world = FrontWorld(gateways={"loop.example": ("127.0.0.1", FRONT_PORT)})  # a gateway that is ourselves
    world.take()
    world.send(request("MESSAGE", "sip:x@loop.example", forwards=0))
    assert world.statuses() == [483]
    world.send(request("MESSAGE", "sip:x@loop.example"))
    looped, link = forwarded(world, "MESSAGE")
    world.send(looped.to_bytes(), port=FRONT_PORT)
    assert world.statuses() == [482]


def test_cancel_is_answered_and_follows_its_invite_downstream_on_its_branch():
    world = FrontWorld()
    world.register("bob", port=PHONE + 1)
    invite = request("INVITE", BOB)
    world.send(invite)
    world.take()
    world.send(invite.replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL"))
    sent = world.take()
    responses = [m for m, _ in sent if isinstance(m, SipResponse)]
    onward = [(m, link) for m, link in sent if isinstance(m, SipRequest)]
    assert [(r.status, r.get("cseq")) for r in responses] == [(200, "1 CANCEL")]
    assert [(m.method, link.addr[1]) for m, link in onward] == [("CANCEL", PHONE + 1)]
    world.send(request("CANCEL", BOB))  # no INVITE of that branch
    assert world.statuses() == [481]


def test_retransmissions_are_absorbed_while_the_overlay_is_asked_and_answered_from_the_transaction_after():
    world = FrontWorld()
    world.overlay_paused = True
    register = raw_register(PHONE, "dave", PHONE, domain=DOMAIN)
    world.send(register)
    world.send(register)
    world.send(register)
    assert world.take() == [] and len(world.held) == 1  # one store for three copies
    world.resume_overlay()
    assert world.statuses() == [200]
    world.send(register)  # once answered, a retransmission is served again: the same answer, no second store
    assert world.statuses() == [200]
    assert [type(r).__name__ for r in world.overlay_started] == ["OverlayStore", "OverlayFetch"]  # + offline ones


def test_a_message_for_someone_offline_is_kept_once_and_delivered_once_when_they_register():
    world = FrontWorld()
    message = request("MESSAGE", f"sip:erin@{DOMAIN}", body=b"hello")
    world.overlay_paused = True
    world.send(message)
    world.send(message)  # a retransmission while the overlay is asked
    world.resume_overlay()
    assert world.statuses() == [202]
    world.send(message)
    assert world.statuses() == [202]  # repeated from the transaction
    assert len(world.fetch(f"sip:erin@{DOMAIN}", Kind.OFFLINE_MESSAGE).entries) == 1
    world.register("erin", port=PHONE + 2)
    delivered, link = forwarded(world, "MESSAGE")
    assert link.addr[1] == PHONE + 2 and delivered.body == b"hello"
    assert delivered.get("from", ) is not None and "alice" in (delivered.get("from") or "")
    world.advance(500)
    assert forwarded(world, "MESSAGE")[0].to_bytes() == delivered.to_bytes()  # Timer E: the same bytes again
    world.send(answer(delivered, 200), port=PHONE + 2)
    world.advance(10)
    assert world.fetch(f"sip:erin@{DOMAIN}", Kind.OFFLINE_MESSAGE).entries == ()
    world.advance(60_000)
    assert [m for m, _ in world.take() if isinstance(m, SipRequest)] == []  # delivered once


def test_a_message_to_a_silent_phone_is_kept_offline_after_the_reach_timeout():
    world = FrontWorld()
    world.register("fay", port=PHONE + 3)
    world.send(request("MESSAGE", f"sip:fay@{DOMAIN}", body=b"are you there"))
    world.advance(4000)
    assert world.statuses() == [202]
    kept = world.fetch(f"sip:fay@{DOMAIN}", Kind.OFFLINE_MESSAGE).entries
    assert [OfflineMessage.from_bytes(e.value).text for e in kept] == ["are you there"]


def test_a_registration_that_is_not_refreshed_expires():
    world = FrontWorld()
    world.register("gus", port=PHONE + 4, expires=2)
    world.advance(1999)
    world.send(request("INVITE", f"sip:gus@{DOMAIN}"))
    assert [m.method for m, _ in world.requests()] == ["INVITE"]  # still bound: rung
    world.advance(1)
    assert world.fetch(f"sip:gus@{DOMAIN}", Kind.SIP_REGISTRATION).entries == ()
    world.send(request("MESSAGE", f"sip:gus@{DOMAIN}", body=b"hi"))
    assert 202 in world.statuses()  # not online any more: kept for later


def test_register_over_tcp_is_answered_on_the_connection_and_its_transaction_ends_at_once():
    world = FrontWorld()
    world.send(raw_register(PHONE, "hal", PHONE, domain=DOMAIN).replace(b"UDP", b"TCP"), transport="TCP")
    sent = world.take()
    assert [(m.status, link.transport) for m, link in sent if isinstance(m, SipResponse)] == [(200, "TCP")]
    assert world.front.transactions == 0  # Timer J is zero on a reliable transport


def test_transactions_over_udp_live_as_section_17_says():
    world = FrontWorld()
    register = raw_register(PHONE + 5, "ivy", PHONE + 5, domain=DOMAIN)
    world.overlay_paused = True
    world.send(register)
    world.send(register)  # absorbed while the overlay stores it
    assert world.front.transactions == 1 and world.take() == []
    world.resume_overlay()
    assert world.statuses() == [200]
    assert world.front.transactions == 0  # answered as a stateless UAS would (§8.2.7): no 32 s of state
    world.send(register)
    assert world.statuses() == [200] and len([r for r in world.held + world.overlay_started
                                               if type(r).__name__ == "OverlayStore"]) == 1  # and no second store
    world.send(in_dialog("BYE", f"sip:ivy@{DOMAIN}"))
    sent, link = forwarded(world, "BYE")
    world.send(answer(sent, 200), port=PHONE + 5)
    assert world.statuses() == [200] and world.front.transactions == 2  # server (J: 32 s), client (K: T4)
    world.advance(5000)
    assert world.front.transactions == 1
    world.advance(27_000)
    assert world.front.transactions == 0


def test_a_refused_tcp_connection_fails_the_branch_at_once():
    world = FrontWorld()
    world.register("kit", port=PHONE + 5)  # a phone of ours may send anywhere through us
    world.send(request("OPTIONS", f"sip:joe@127.0.0.1:{PHONE + 6};transport=tcp", to=f"sip:joe@{DOMAIN}"))
    _, link = forwarded(world, "OPTIONS")
    assert link.transport == "TCP"
    world.front.transport_failed(link, now_ms=world.now_ms)
    world._pump()
    assert world.statuses() == [480]


def test_a_full_transaction_table_refuses_new_requests_with_retry_after_but_never_an_in_dialog_one(monkeypatch):
    monkeypatch.setattr(front_module, "TRANSACTIONS_MAX", 3)
    world = FrontWorld()
    world.register("kim", port=PHONE + 7)
    world.overlay_paused = True  # three INVITEs wait for their lookups: three transactions
    for i in range(3):
        world.send(request("INVITE", f"sip:nobody{i}@{DOMAIN}"))
    world.take()
    assert world.front.transactions == 3
    world.send(request("INVITE", f"sip:kim@{DOMAIN}"))
    refused = world.responses()
    assert [r.status for r in refused] == [503] and refused[0].get("retry-after") == "5"
    world.send(in_dialog("BYE", f"sip:kim@{DOMAIN}"))
    assert [m.method for m, _ in world.requests()] == ["BYE"]  # forwarded statelessly


def test_broken_requests_are_answered_400_or_dropped_and_leave_no_transaction_behind():
    half_broken = [  # parse, but are not requests a proxy can serve: answered 400
        request("INVITE", BOB).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
        request("INVITE", BOB).replace(b"Max-Forwards: 70", b"Max-Forwards: many"),
        request("INVITE", BOB).replace(b"Call-ID", b"X-Call-ID"),
        request("REGISTER", f"sip:{DOMAIN}", to="nonsense"),
        request("INVITE", "sip:@@"),
    ]
    world = FrontWorld()
    for raw in BROKEN:
        world.send(raw)
    assert world.take() == []  # nothing answered the unparseable ones
    for raw in half_broken:
        world.send(raw)
        assert world.statuses() == [400]
    world.advance(64_000)
    assert world.front.transactions == 0
    assert world.front.counters["sip dropped: unparseable"] == len(BROKEN) - 1  # b"" is a keepalive
    assert world.front.counters["sip internal errors"] == 0


@settings(max_examples=4000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=0, max_size=12), st.integers(0, 12)), max_size=3),
       st.sampled_from(["INVITE", "REGISTER", "MESSAGE", "CANCEL", "ACK", "BYE", "OPTIONS", "SUBSCRIBE"]))
def test_fuzzed_requests_never_break_the_front(edits, method):
    world = FrontWorld(reach_timeout_ms=50)
    raw = request(method, BOB, extra=f"Contact: <sip:bob@127.0.0.1:{PHONE}>\r\n"
                                     f"Route: <sip:127.0.0.1:{FRONT_PORT};lr>\r\n")
    for at, insert, cut in edits:
        raw = raw[:at] + insert + raw[at + cut:]
    world.send(raw)
    world.advance(100)
    assert world.front.counters["sip internal errors"] == 0
    world.take()
    world.send(request("OPTIONS", OPTIONS_TO_FRONT, call_id="probe"))
    assert [(r.status, r.get("call-id")) for r in world.responses()] == [(200, "probe@test")]


def test_a_flood_of_requests_stays_within_the_front_s_bounds_and_no_source_takes_them_all():
    world = FrontWorld()
    world.overlay_paused = True
    for i in range(RESOLVING_MAX):  # bounded: INVITEs for AORs nobody registered, no pause between
        world.send(request("INVITE", f"sip:u{i}@{DOMAIN}"), host="127.0.0.66")
    assert world.front.resolving == RESOLVING_PER_SOURCE_MAX  # the rest is left for others
    for i in range(2000):
        world.send(request("INVITE", f"sip:v{i}@{DOMAIN}"), host=f"127.0.0.{67 + i % 2}")
    assert world.front.resolving == RESOLVING_MAX and len(world.held) == RESOLVING_MAX
    busy = [r for r in world.responses() if r.status == 503]
    assert len(busy) == 2000 and all(r.get("retry-after") for r in busy)  # RESOLVING_MAX of them admitted
    world.resume_overlay()
    assert world.front.resolving == 0
    world.send(request("OPTIONS", OPTIONS_TO_FRONT, call_id="probe"))
    assert (200, "probe@test") in [(r.status, r.get("call-id")) for r in world.responses()]
    assert world.front.counters["sip internal errors"] == 0


def test_a_gateway_is_advertised_at_once_and_before_its_record_lapses():
    world = FrontWorld(gateways={"pstn.example": ("127.0.0.1", 5999)})
    world.advance(0)
    key = id_from_name(front_module.gateway_name("pstn.example"))
    stores = [r for r in world.overlay_started if getattr(r, "resource", None) == key]
    assert len(stores) == 1
    world.advance(front_module.GATEWAY_LIFETIME_S * 1000 // 3)
    stores = [r for r in world.overlay_started if getattr(r, "resource", None) == key]
    assert len(stores) == 2


def test_a_phone_that_refreshes_often_costs_the_overlay_a_store_only_when_its_copy_ages():
    world = FrontWorld()
    kinds = lambda: [type(r).__name__ for r in world.overlay_started  # noqa: E731
                     if not (isinstance(r, OverlayFetch) and r.kind == Kind.SIP_REGISTRATION)]  # not the audits
    world.register("lea", port=PHONE + 8, expires=600)
    assert kinds() == ["OverlayStore", "OverlayFetch"]  # stored, and its kept messages looked for
    world.advance(150_000)
    world.register("lea", port=PHONE + 8, expires=600)  # the stored copy has 450 s of 600 left
    assert kinds() == ["OverlayStore", "OverlayFetch"]
    world.advance(1000)
    world.register("lea", port=PHONE + 8, expires=600)  # under three quarters left: stored again
    assert kinds() == ["OverlayStore", "OverlayFetch", "OverlayStore"]
    assert world.fetch(f"sip:lea@{DOMAIN}", Kind.SIP_REGISTRATION).entries[0].lifetime_s == 600
    world.advance(150_000)
    world.register("lea", port=PHONE + 8, expires=600)  # five minutes on: kept messages looked for again
    assert kinds()[-1] == "OverlayFetch"


def test_a_callee_registered_through_two_fronts_is_reached_through_the_second_when_the_first_is_silent():
    world = FrontWorld()
    aor = f"sip:mia@{DOMAIN}"
    for i, front_port in enumerate((6001, 6002)):  # two other peers' fronts; 6002's record is the newer
        record = Registration(f"sip:mia@127.0.0.1:{PHONE + 9};line={i}", ("127.0.0.1", front_port), 1000 + i)
        world.node.store(id_from_name(aor), Kind.SIP_REGISTRATION, DataModel.DICTIONARY,
                         [Entry(bytes([i]) * 20, record.to_bytes(), 1000 + i, 600)], now_ms=world.now_ms)
    world.ring.flush(world.node)
    world.ring.run(10)
    world.send(request("INVITE", aor))
    first = [(m, link) for m, link in world.take() if isinstance(m, SipRequest)]
    assert [link.addr[1] for _, link in first] == [6002]
    world.advance(4000)  # 6002 says nothing: its peer is gone
    second = [(m, link) for m, link in world.take() if isinstance(m, SipRequest) and m.method == "INVITE"]
    assert second[-1][1].addr[1] == 6001 and world.front.counters["sip forked to another front"] == 1
    world.send(answer(second[-1][0], 180, "Ringing"), port=6001)
    assert world.statuses() == [180]  # the caller never heard of the first front's silence


def test_a_failure_from_one_front_of_the_callee_sends_the_request_to_the_next():
    world = FrontWorld()
    aor = f"sip:ned@{DOMAIN}"
    for i, front_port in enumerate((6003, 6004)):
        record = Registration(f"sip:ned@127.0.0.1:{PHONE + 10};line={i}", ("127.0.0.1", front_port), 2000 + i)
        world.node.store(id_from_name(aor), Kind.SIP_REGISTRATION, DataModel.DICTIONARY,
                         [Entry(bytes([i]) * 20, record.to_bytes(), 1000 + i, 600)], now_ms=world.now_ms)
    world.ring.flush(world.node)
    world.ring.run(10)
    world.send(request("MESSAGE", aor, body=b"hi"))
    sent, link = forwarded(world, "MESSAGE")
    assert link.addr[1] == 6004
    world.send(answer(sent, 480, "Temporarily Unavailable"), port=6004)
    again, link = forwarded(world, "MESSAGE")
    assert link.addr[1] == 6003 and again.get_all("via")[0] != sent.get_all("via")[0]  # a branch of its own
    world.send(answer(again, 200), port=6003)
    assert world.statuses() == [200]


def test_a_register_whose_store_a_later_one_of_the_same_phone_overtook_is_answered_200():
    world = FrontWorld()
    world.overlay_paused = True
    world.send(raw_register(PHONE + 11, "ola", PHONE + 11, domain=DOMAIN))
    world.advance(10)
    world.send(raw_register(PHONE + 11, "ola", PHONE + 11, domain=DOMAIN))  # a new REGISTER, not a copy
    assert len(world.held) == 2
    world.held.reverse()  # the later store reaches the overlay first; the earlier one is then too old
    world.resume_overlay()
    assert world.statuses() == [200, 200]


def test_a_register_under_a_record_another_key_holds_is_refused():
    world = FrontWorld()
    aor, contact = f"sip:pia@{DOMAIN}", f"sip:pia@127.0.0.1:{PHONE + 12}"
    squatter = Registration(contact, ("127.0.0.1", 6009), 4242)  # newer than anything we will store
    world.node.store(id_from_name(aor), Kind.SIP_REGISTRATION, DataModel.DICTIONARY,
                     [Entry(front_module._contact_key(contact), squatter.to_bytes(),
                            world.now_ms + 30_000, 600)],
                     now_ms=world.now_ms)
    world.ring.flush(world.node)
    world.ring.run(10)
    world.send(raw_register(PHONE + 12, "pia", PHONE + 12, domain=DOMAIN))
    refused = world.responses()  # the record is the node key's, not the AOR's open key
    assert [r.status for r in refused] == [403] and "another key" in refused[0].reason
    world.register("lee")  # a user nobody squats registers as before


def test_when_the_overlay_lags_new_phones_are_answered_at_once_and_stored_behind(monkeypatch):
    monkeypatch.setattr(front_module, "REGISTER_STORES_MAX", 4)
    world = FrontWorld()
    stores = lambda requests: [r for r in requests if isinstance(r, OverlayStore)]  # noqa: E731
    world.overlay_paused = True
    for i in range(10):
        world.send(raw_register(PHONE + i, f"u{i}", PHONE + i, 600, domain=DOMAIN))
    assert len(stores(world.held)) == 4  # answered once stored, while the overlay keeps up
    assert world.statuses() == [200] * 6  # the window is full: kept here, answered, stored behind
    world.send(raw_register(PHONE + 1, "u1", PHONE + 1, 0, domain=DOMAIN))
    assert len(stores(world.held)) == 5 and world.statuses() == []  # a removal always waits for its store
    world.send(request("INVITE", f"sip:u9@{DOMAIN}"))
    assert forwarded(world, "INVITE")[1].addr == ("127.0.0.1", PHONE + 9)  # bound here, reached at once
    world.resume_overlay()
    assert world.statuses().count(200) == 5
    assert world.front.counters["sip registrations stored behind"] == 6
    held = {i for i in range(10) if world.fetch(f"sip:u{i}@{DOMAIN}", Kind.SIP_REGISTRATION).entries}
    assert held == set(range(10)) - {1}
    assert len(stores(world.overlay_started)) == 11  # one each, and the removal: nothing stored twice
    world.send(raw_register(PHONE + 9, "u9", PHONE + 9, 600, domain=DOMAIN))
    assert world.statuses() == [200] and len(stores(world.overlay_started)) == 11  # its copy is fresh


def test_a_retransmitted_register_gets_the_same_answer_without_being_served_again():
    world = FrontWorld()
    raw = raw_register(PHONE + 13, "uma", PHONE + 13, 600, domain=DOMAIN)
    world.send(raw, PHONE + 13)
    first = world.take()
    world.advance(500)  # the phone's T1: its 200 was lost
    world.send(raw, PHONE + 13)
    assert [m.to_bytes() for m, _ in world.take()] == [m.to_bytes() for m, _ in first]
    assert world.front.counters["sip retransmissions answered again"] == 1
    assert world.front.counters["sip REGISTER"] == 1  # parsed and served once
    world.send(raw, PHONE + 14)  # the same bytes from elsewhere: not taken for a retransmission
    assert world.front.counters["sip REGISTER"] == 2


def test_a_client_front_says_its_phones_are_reached_through_its_peer_and_moves_them_when_it_moves():
    world = FrontWorld()
    world.register("ivy", port=PHONE + 20)
    aor = f"sip:ivy@{DOMAIN}"

    def stored() -> Registration:
        [entry] = world.fetch(aor, Kind.SIP_REGISTRATION).entries
        return Registration.from_bytes(entry.value)

    assert stored().reachable and stored().via is None
    world.front.reached_through(0xBEEF, now_ms=world.now_ms)
    world.advance(10)
    assert (stored().reachable, stored().via, stored().node_id) == (False, 0xBEEF, world.node.me.node_id)
    world.front.reached_through(0xCAFE, now_ms=world.now_ms)  # its peer died: another admitted it
    world.advance(10)
    assert stored().via == 0xCAFE
    world.front.reached_through(None, now_ms=world.now_ms)  # a peer again
    world.advance(10)
    assert stored().reachable and stored().via is None


def test_a_front_records_a_route_for_each_side_between_its_phone_on_loopback_and_the_network_and_moves():
    world = FrontWorld(advertise_host="192.0.2.10")
    world.register("lee", port=PHONE + 30)  # a phone beside its front, on loopback
    aor, far = f"sip:lee@{DOMAIN}", ("192.0.2.99", 5060)

    def in_call(method: str, uri: str, routes: list[str], port: int) -> bytes:
        data = request(method, uri, port, call_id="move", to=aor, extra="".join(f"Route: {r}\r\n" for r in routes))
        return data.replace(f"To: <{aor}>".encode(), f"To: <{aor}>;tag=x".encode())

    world.send(request("INVITE", aor, port=far[1], call_id="move"), port=far[1], host=far[0])
    invite, link = forwarded(world, "INVITE")
    assert link.addr == ("127.0.0.1", PHONE + 30)
    routes = invite.get_all("record-route")  # the phone's side on top: the phone sends to it
    assert [NameAddr.parse(r).uri.host for r in routes] == ["127.0.0.1", "192.0.2.10"]
    assert invite.get_all("via")[0].startswith(f"SIP/2.0/UDP 127.0.0.1:{FRONT_PORT};")  # its answers stay on lo
    world.send(in_call("BYE", f"sip:alice@{far[0]}:{far[1]}", routes, PHONE + 30), port=PHONE + 30)
    bye, link = forwarded(world, "BYE")  # both routes were ours
    assert link.addr == far and not bye.get_all("route")
    assert bye.get_all("via")[0].startswith(f"SIP/2.0/UDP 192.0.2.10:{FRONT_PORT};")

    world.front.moved("192.0.2.11", now_ms=world.now_ms)  # a new lease
    world.advance(10)
    [entry] = world.fetch(aor, Kind.SIP_REGISTRATION).entries
    assert Registration.from_bytes(entry.value).front == ("192.0.2.11", FRONT_PORT)
    world.send(request("INVITE", aor, port=far[1], call_id="move2"), port=far[1], host=far[0])
    invite, _ = forwarded(world, "INVITE")
    assert [NameAddr.parse(r).uri.host for r in invite.get_all("record-route")] == ["127.0.0.1", "192.0.2.11"]
    # A request of the first call that made it here by the old address is still ours to route.
    world.send(in_call("BYE", f"sip:lee@127.0.0.1:{PHONE + 30}", routes[::-1], far[1]), port=far[1], host=far[0])
    _, link = forwarded(world, "BYE")
    assert link.addr == ("127.0.0.1", PHONE + 30)
    world.front.moved("192.0.2.12", now_ms=world.now_ms)  # two moves on, the first address is someone else's:
    world.send(in_call("BYE", f"sip:lee@127.0.0.1:{PHONE + 30}", routes[::-1], far[1]), port=far[1], host=far[0])
    assert 403 in world.statuses()  # not ours to pop, and a stranger's route elsewhere is not relayed


def test_sip_for_a_phone_behind_a_client_goes_through_the_overlay_by_way_of_its_peer():
    world = FrontWorld()
    aor = f"sip:kai@{DOMAIN}"
    record = Registration(f"sip:kai@127.0.0.1:{PHONE + 21}", ("127.0.0.1", 6011), 0x5151, False, via=0x7777)
    world.node.store(id_from_name(aor), Kind.SIP_REGISTRATION, DataModel.DICTIONARY,
                     [Entry(b"k" * 20, record.to_bytes(), 1000, 600)], now_ms=world.now_ms)
    world.ring.flush(world.node)
    world.ring.run(10)
    world.send(request("INVITE", aor))
    tunnels = [r for r in world.overlay_started if isinstance(r, OverlayTunnel)]
    assert tunnels and {(t.node_id, t.via) for t in tunnels} == {(0x5151, 0x7777)}


def test_answers_to_a_front_behind_a_client_go_back_by_way_of_the_peer_its_tunnel_named():
    world = FrontWorld()
    world.register("lou")
    invite = request("INVITE", f"sip:lou@{DOMAIN}", port=6011, call_id="from-a-client")
    for part in tunnel.split(invite, b"\x01" * tunnel.MESSAGE_ID_BYTES):
        world.front.receive_tunnelled(0x5151, part, via=0x7777, now_ms=world.now_ms)
    world._pump()
    sent, link = forwarded(world, "INVITE")
    assert link.addr == ("127.0.0.1", PHONE)
    world.send(answer(sent, 180, "Ringing"))
    tunnels = [r for r in world.overlay_started if isinstance(r, OverlayTunnel)]
    assert tunnels and {(t.node_id, t.via) for t in tunnels} == {(0x5151, 0x7777)}  # its 100 Trying and 180


def _store_front_record(world: FrontWorld, aor: str, front_port: int, node_id: int, tls_port: int) -> None:
    record = Registration(f"{aor[:-len(DOMAIN)]}127.0.0.9:5060", ("127.0.0.1", front_port), node_id,
                          tls_port=tls_port)
    world.node.store(id_from_name(aor), Kind.SIP_REGISTRATION, DataModel.DICTIONARY,
                     [Entry(b"\x07" * 20, record.to_bytes(), 1000, 600)], now_ms=world.now_ms)
    world.ring.flush(world.node)
    world.ring.run(10)


def test_a_front_calls_a_front_that_takes_tls_over_tls_and_records_a_route_for_each_transport():
    tls_port = FRONT_PORT + 1
    world = FrontWorld(tls_port=tls_port)
    world.register("uma", port=PHONE + 40)  # a phone on UDP
    aor = f"sip:vic@{DOMAIN}"
    _store_front_record(world, aor, 6005, 3000, tls_port=6006)
    world.send(request("INVITE", aor, port=PHONE + 40, call_id="tls"), port=PHONE + 40)
    invite, link = forwarded(world, "INVITE")
    assert link == Link("TLS", ("127.0.0.1", 6006), 3000)  # and the callee's front must prove to be node 3000
    assert invite.get_all("via")[0].startswith(f"SIP/2.0/TLS 127.0.0.1:{tls_port};")
    routes = [NameAddr.parse(r).uri for r in invite.get_all("record-route")]
    assert [(u.port, u.param("transport")) for u in routes] == [(tls_port, "tls"), (FRONT_PORT, None)]
    assert routes[0].param("pp-node") == f"{world.node.me.node_id:x}"  # whom the callee's front may expect
    world.send(answer(invite, 180, "Ringing"), port=6006, transport="TLS")
    assert world.statuses() == [180]  # to the phone, over UDP

    # The phone's BYE takes the route back: both of ours are popped, and the callee front's
    # own (what its 200 recorded) is reached over TLS, as the node it names.
    theirs = "<sip:127.0.0.1:6006;transport=tls;pp-node=bb8;lr>"
    bye = request("BYE", "sip:vic@127.0.0.9:5060", PHONE + 40, call_id="tls", to=aor,
                  extra="".join(f"Route: <{u}>\r\n" for u in reversed(routes)) + f"Route: {theirs}\r\n")
    world.send(bye.replace(f"To: <{aor}>".encode(), f"To: <{aor}>;tag=x".encode()), port=PHONE + 40)
    bye_out, link = forwarded(world, "BYE")
    assert link == Link("TLS", ("127.0.0.1", 6006), 0xbb8) and bye_out.get_all("route") == [theirs]

    # The callee's side sends by our TLS route: taken as ours, not relayed elsewhere.
    assert world.front._is_me(routes[0]) and world.front._is_me(routes[1])


def test_a_front_without_tls_calls_a_front_that_takes_it_over_udp():
    world = FrontWorld()  # no TLS port of its own
    aor = f"sip:wes@{DOMAIN}"
    _store_front_record(world, aor, 6007, 3001, tls_port=6008)
    world.send(request("INVITE", aor))
    _, link = forwarded(world, "INVITE")
    assert link == Link("UDP", ("127.0.0.1", 6007))


def test_an_enrolled_front_registers_only_its_node_s_names_and_stores_its_ticket_first():
    world = FrontWorld(enrolled=True, names=(BOB,))
    world.register("bob")
    names = world.fetch(BOB, Kind.NAME).entries
    registrations = world.fetch(BOB, Kind.SIP_REGISTRATION).entries
    assert [e.seal.signer for e in names] == [e.seal.signer for e in registrations] == [world.node.identity.public_key]
    world.send(raw_register(PHONE + 50, "eve", PHONE + 50, domain=DOMAIN), PHONE + 50)
    assert world.statuses() == [403] and world.front.counters["refused.sip_not_named"] == 1
    assert not world.fetch(f"sip:eve@{DOMAIN}", Kind.SIP_REGISTRATION).entries


def test_an_enrolled_lookup_asks_for_the_records_and_the_name_s_tickets_at_once():
    """One round trip, not two: the tickets were asked for only once the records had come.
    (tests/app/test_enrolled.py calls through it between real processes.)"""
    world = FrontWorld(enrolled=True, names=(BOB,))
    world.overlay_paused = True
    world.send(request("INVITE", BOB, PHONE + 51), port=PHONE + 51)  # registered nowhere yet
    resource = id_from_name(BOB)
    assert sorted((r.resource, r.kind) for r in world.held) == [(resource, Kind.SIP_REGISTRATION),
                                                                 (resource, Kind.NAME)]
    world.resume_overlay()
    assert world.statuses() == [100, 404]


def test_an_enrolled_front_is_a_gateway_only_when_its_node_is_named_for_the_domain():
    name = front_module.gateway_name("pstn.example")
    named = FrontWorld(enrolled=True, names=(name,), gateways={"pstn.example": ("127.0.0.1", 5999)})
    named.advance(10)
    [ticket] = named.fetch(name, Kind.NAME).entries
    [record] = named.fetch(name, Kind.GATEWAY).entries
    assert ticket.seal.signer == record.seal.signer == named.node.identity.public_key
    unnamed = FrontWorld(enrolled=True, gateways={"pstn.example": ("127.0.0.1", 5999)})
    unnamed.advance(10)
    assert not unnamed.overlay_started and not unnamed.fetch(name, Kind.GATEWAY).entries
