"""The registrar and router under abuse (issue 11), sans-I/O: per-source bounds, expiry that
frees room, one binding per phone instance (RFC 5626), offline messages delivered once, and
no relaying for strangers."""

from __future__ import annotations

from peerphone.core.ids import id_from_name
from peerphone.core.storage import Storage
from peerphone.core.usages import Kind, Registration
from peerphone.core.wire.messages import DataModel, Entry
from peerphone.sip import front as front_module
from peerphone.sip.message import SipRequest

from tests.sip.frontworld import DOMAIN, FRONT_PORT, PHONE, FrontWorld, answer, request
from tests.sip.raw import register as raw_register

INSTANCE = ';+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>";reg-id=1'


def test_one_address_fills_half_the_registrar_and_another_still_registers(monkeypatch):
    monkeypatch.setattr(front_module, "BINDINGS_MAX", 8)
    world = FrontWorld()
    for i in range(6):
        world.send(raw_register(PHONE, f"flood{i}", PHONE + i, expires=30, domain=DOMAIN), host="127.0.0.66")
    refused = world.responses()
    assert [r.status for r in refused] == [200] * 4 + [503] * 2
    assert refused[-1].reason == "Service Unavailable (too many registrations from one address)"
    assert refused[-1].get("retry-after") == "5"
    world.send(raw_register(PHONE, "ann", PHONE + 100, domain=DOMAIN))
    assert world.statuses() == [200]
    world.advance(30_000)  # the flood's bindings expire: their room is free again
    world.send(raw_register(PHONE, "flood9", PHONE + 9, domain=DOMAIN), host="127.0.0.66")
    assert world.statuses() == [200]


def test_a_phone_registering_again_from_a_new_contact_has_one_binding():
    world = FrontWorld()
    first = world.register("ivy", port=PHONE + 1, extra_param=INSTANCE)
    assert len(first.get_all("contact")) == 1
    again = world.register("ivy", port=PHONE + 2, extra_param=INSTANCE)
    assert [c.split(";")[0] for c in again.get_all("contact")] == [f"<sip:ivy@127.0.0.1:{PHONE + 2}>"]
    assert len(world.fetch(f"sip:ivy@{DOMAIN}", Kind.SIP_REGISTRATION).entries) == 1
    world.send(request("INVITE", f"sip:ivy@{DOMAIN}"))
    assert [link.addr[1] for m, link in world.requests() if m.method == "INVITE"] == [PHONE + 2]


def test_a_kept_message_is_delivered_once_however_many_registers_race():
    world = FrontWorld()
    world.send(request("MESSAGE", f"sip:joy@{DOMAIN}", body=b"once"))
    assert world.statuses() == [202]
    world.overlay_paused = True
    for port in (PHONE + 3, PHONE + 4):  # the same phone, twice, before the overlay answers either
        data = raw_register(port, "joy", port, domain=DOMAIN).replace(f":{port}>\r\n".encode(),
                                                                         f":{port}>{INSTANCE}\r\n".encode())
        world.send(data, port)
    world.resume_overlay()
    world.advance(10)
    delivered = [m for m, _ in world.take() if isinstance(m, SipRequest) and m.method == "MESSAGE"]
    assert len(delivered) == 1 and delivered[0].body == b"once"
    world.send(answer(delivered[0], 200), port=PHONE + 4)
    world.advance(60_000)
    assert [m for m, _ in world.take() if isinstance(m, SipRequest) and m.method == "MESSAGE"] == []


STRANGER = "127.0.0.77"
ELSEWHERE = "sip:someone@127.0.0.9:6000"


def _invite(uri: str, route: str = "", call_id: str | None = None, dialog: bool = False) -> bytes:
    data = request("INVITE" if not dialog else "BYE", uri, extra=f"Route: {route}\r\n" if route else "",
                   call_id=call_id)
    return data.replace(b"To: <" + uri.encode() + b">", b"To: <" + uri.encode() + b">;tag=far") if dialog else data


def test_a_stranger_cannot_relay_through_the_front_but_our_phones_and_recorded_dialogs_can():
    world = FrontWorld()
    front = f"<sip:127.0.0.1:{FRONT_PORT};lr>"
    for data in (_invite(ELSEWHERE), _invite(ELSEWHERE, route=f"{front}, <sip:127.0.0.9:6000;lr>"),
                 _invite(f"sip:x@{DOMAIN}", route="<sip:127.0.0.9:6000;lr>")):
        world.send(data, host=STRANGER)
        assert [r.status for r in world.responses() if r.status >= 200] == [403]
    assert world.requests() == []
    world.register("kay", port=PHONE + 5)  # a phone of ours (host 127.0.0.1) may use us as its outbound proxy
    world.send(_invite(ELSEWHERE))
    assert [link.addr for m, link in world.requests()] == [("127.0.0.9", 6000)]
    world.send(_invite(f"sip:kay@{DOMAIN}", call_id="dialog-1"), host=STRANGER)  # a call we route to kay
    recorded = next(m for m, _ in world.requests() if m.method == "INVITE").get("record-route")
    world.send(_invite(ELSEWHERE, route=f"{recorded}, <sip:127.0.0.9:6000;lr>", call_id="dialog-1",
                       dialog=True), host=STRANGER)
    assert [link.addr for m, link in world.requests()] == [("127.0.0.9", 6000)]  # our own route, come back
    forged = (recorded or "").replace("pp-rr=", "pp-rr=0")
    world.send(_invite(ELSEWHERE, route=f"{forged}, <sip:127.0.0.9:6000;lr>", call_id="dialog-1",
                       dialog=True), host=STRANGER)
    assert world.requests() == [] and world.front.counters["sip refused: not a relay"] == 4


def test_a_binding_the_overlay_lost_is_stored_again_within_a_cycle():
    world = FrontWorld()
    aor = f"sip:max@{DOMAIN}"
    world.register("max", port=PHONE + 6, expires=600)
    world.node.storage = Storage()  # every holder of the record died before passing it on
    assert world.fetch(aor, Kind.SIP_REGISTRATION).entries == ()
    world.advance(front_module.AUDIT_CYCLE_MS + front_module.AUDIT_TICK_MS)
    entries = world.fetch(aor, Kind.SIP_REGISTRATION).entries
    assert [Registration.from_bytes(e.value).contact for e in entries] == [f"sip:max@127.0.0.1:{PHONE + 6}"]
    assert world.front.counters["sip bindings stored again (the overlay had lost them)"] == 1
    world.advance(front_module.AUDIT_CYCLE_MS)
    assert world.front.counters["sip bindings stored again (the overlay had lost them)"] == 1  # nothing lost since


def test_when_a_node_fails_the_bindings_are_looked_at_at_once_not_at_the_next_round():
    world = FrontWorld()
    aor = f"sip:mo@{DOMAIN}"
    world.register("mo", port=PHONE + 7, expires=600)
    world.advance(front_module.AUDIT_TICK_MS + front_module.AUDIT_SOON_MS)  # past the first round's start
    world.node.storage = Storage()  # the node that held its record failed
    world.front.overlay_changed(now_ms=world.now_ms)
    world.advance(front_module.AUDIT_TICK_MS)
    assert world.fetch(aor, Kind.SIP_REGISTRATION).entries  # stored again within a tick, not 30 s
    stored = world.front.counters["sip bindings stored again (the overlay had lost them)"]
    world.front.overlay_changed(now_ms=world.now_ms)  # failures in a row: one round per AUDIT_SOON_MS
    assert world.front.next_deadline_ms() != world.now_ms and stored == 1


def test_a_bye_whose_recorded_front_died_finds_the_far_end_through_its_other_front():
    world = FrontWorld()
    world.register("ned", port=PHONE + 7)  # the caller, a phone of ours
    bob = f"sip:bob@{DOMAIN}"
    contact = "sip:bob@127.0.0.1:7000"
    for node, port in ((101, 6001), (102, 6002)):  # Bob registered through two other fronts
        record = Registration(contact, ("127.0.0.1", port), node)
        world.node.store(id_from_name(bob), Kind.SIP_REGISTRATION, DataModel.DICTIONARY,
                         [Entry(bytes([node]), record.to_bytes(), world.now_ms, 600)], now_ms=world.now_ms)
        world.ring.flush(world.node)
    world.ring.run(10)
    bye = request("BYE", contact, port=PHONE + 7, to=bob,
                  extra=f"Route: <sip:127.0.0.1:{FRONT_PORT};lr>, <sip:127.0.0.1:6001;lr>\r\n")
    world.send(bye.replace(f"To: <{bob}>".encode(), f"To: <{bob}>;tag=b0b".encode()), port=PHONE + 7)
    assert [link.addr for m, link in world.requests()] == [("127.0.0.1", 6001)]  # along the recorded route
    world.advance(front_module.REACH_TIMEOUT_MS + 100)  # that front is dead: nothing answers
    rerouted = [(m, link) for m, link in world.requests() if link.addr != ("127.0.0.1", 6001)]
    assert [(m.method, m.uri, link.addr) for m, link in rerouted] == [("BYE", bob, ("127.0.0.1", 6002))]
    assert rerouted[0][0].get_all("route") == []
    world.send(answer(rerouted[0][0], 200), port=6002)
    assert world.statuses()[-1:] == [200]


def test_an_unregistered_binding_is_remembered_as_long_as_its_record_could_live():
    world = FrontWorld()
    world.register("mia", expires=60)
    world.advance(20_000)
    world.register("mia", expires=0)
    held = world.node.storage.fetch(id_from_name(f"sip:mia@{DOMAIN}"), Kind.SIP_REGISTRATION,
                                    now_ms=world.now_ms, tombstones=True).entries
    assert [(e.value, e.lifetime_s) for e in held] == [(b"", 40)]  # not the hour any record could live
