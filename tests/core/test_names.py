"""Names in an enrolled overlay (core/names.py, issue 15): only a key the authority's ticket
names registers a name, in every topology; tickets are checked by the storing peer and by
the reader, and nobody forges, borrows or replays one onto another name or key."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from peerphone.core.access import BAD_TICKET, NOT_NAMED, Checks, store_refusal
from peerphone.core.ids import id_from_name
from peerphone.core.names import NameTicket, issue_ticket, read_ticket
from peerphone.core.peer import PeerNode
from peerphone.core.storage import Storage
from peerphone.core.usages import MODEL_OF, Kind, Registration
from peerphone.core.wire.messages import DataModel, Entry, Store

from tests.core.test_peer import completed
from tests.ring import OVERLAY, Ring, build, sealed

BOB = "sip:bob@peerphone.local"
RESOURCE = id_from_name(BOB)
DICT = DataModel.DICTIONARY


def ticket_of(ring: Ring, node: PeerNode, name: str = BOB) -> NameTicket:
    assert ring.authority is not None
    return NameTicket(node.identity.public_key, issue_ticket(ring.authority, name, node.identity.public_key))


def store(ring: Ring, node: PeerNode, kind: Kind, entry: Entry) -> str | None:
    """`node` stores `entry` under Bob's resource, sealed with its key: the error's reason, or None."""
    handle = node.store(RESOURCE, kind, MODEL_OF[kind], [entry], now_ms=ring.now_ms)
    ring.flush(node)
    ring.run(2000)
    error = completed(ring, handle, node).error
    return error.reason if error is not None else None


def registration(node: PeerNode, t: int) -> Entry:
    record = Registration(f"sip:bob@10.0.0.{t % 250}:5060", ("10.0.0.1", 5060), node.me.node_id)
    return Entry(b"c" * 20, record.to_bytes(), t, 600)


def test_only_a_key_a_ticket_names_registers_the_name_and_readers_see_whose_it_is(topology) -> None:
    ring = build(6, seed=11, topology=topology, enrolled=True)
    bobs, mole = ring.live()[:2]
    holders = [n for n in ring.live() if n.me.node_id in ring.replica_set(RESOURCE)]

    assert store(ring, mole, Kind.SIP_REGISTRATION, registration(mole, ring.now_ms)) == NOT_NAMED.reason
    no_ticket_yet = store(ring, bobs, Kind.SIP_REGISTRATION, registration(bobs, ring.now_ms))
    assert no_ticket_yet == NOT_NAMED.reason
    assert store(ring, bobs, Kind.NAME, ticket_of(ring, bobs).entry(ring.now_ms, 600)) is None
    assert store(ring, bobs, Kind.SIP_REGISTRATION, registration(bobs, ring.now_ms)) is None
    assert sum(n.counters["refused.not_named"] for n in holders) >= 2  # (each of the k closest, in Kademlia)

    # Bob's ticket, copied: sealed by the mole, it is refused (the ticket names Bob's key, not
    # the seal's); the mole's own key on Bob's ticket fails the authority's signature; the
    # mole's ticket for another name fails it for this one.
    borrowed = ticket_of(ring, bobs).entry(ring.now_ms, 600)
    assert store(ring, mole, Kind.NAME, borrowed) == BAD_TICKET.reason
    forged = NameTicket(mole.identity.public_key, ticket_of(ring, bobs).ticket)
    assert store(ring, mole, Kind.NAME, forged.entry(ring.now_ms, 600)) == BAD_TICKET.reason
    elsewhere = ticket_of(ring, mole, "sip:mallory@peerphone.local")
    assert store(ring, mole, Kind.NAME, elsewhere.entry(ring.now_ms, 600)) == BAD_TICKET.reason
    assert store(ring, mole, Kind.SIP_REGISTRATION, registration(mole, ring.now_ms + 1)) == NOT_NAMED.reason

    # A reader gets Bob's tickets and his registration, sealed by the key they name.
    reader = ring.live()[-1]
    for kind in (Kind.NAME, Kind.SIP_REGISTRATION):
        handle = reader.fetch(RESOURCE, kind, now_ms=ring.now_ms)
        ring.flush(reader)
        ring.run(2000)
        answer = completed(ring, handle, reader).answer
        assert answer is not None and [e.seal.signer for e in answer.entries] == [bobs.identity.public_key]


def test_a_second_device_of_the_same_user_registers_beside_the_first_and_touches_only_its_own() -> None:
    ring = build(4, seed=3, enrolled=True)
    desk, mobile = ring.live()[:2]
    for device in (desk, mobile):
        assert store(ring, device, Kind.NAME, ticket_of(ring, device).entry(ring.now_ms, 600)) is None
    assert store(ring, desk, Kind.SIP_REGISTRATION, registration(desk, ring.now_ms)) is None
    mobile_entry = registration(mobile, ring.now_ms)
    assert store(ring, mobile, Kind.SIP_REGISTRATION, Entry(b"m" * 20, mobile_entry.value, ring.now_ms, 600)) is None
    # the desk's entry is the desk's: the mobile may not overwrite it
    assert store(ring, mobile, Kind.SIP_REGISTRATION, registration(mobile, ring.now_ms + 5)) is not None


def test_the_storing_peer_s_check_in_isolation_and_an_ad_hoc_overlay_keeps_first_come() -> None:
    ring = Ring(seed=1, enrolled=True)
    bob, other = ring.identity(), ring.identity()
    assert ring.authority is not None
    checks = Checks(OVERLAY, ring.authority.public_key)
    storage = Storage()
    ticket = NameTicket(bob.public_key, issue_ticket(ring.authority, BOB, bob.public_key))
    name_store = sealed(Store(RESOURCE, Kind.NAME, DICT, (ticket.entry(1000, 600),), False), bob)
    assert store_refusal(name_store, storage, checks, 1000) is None
    storage.store(name_store, now_ms=1000)
    entry = Entry(b"c" * 20, b"{}", 1000, 600)
    mine = sealed(Store(RESOURCE, Kind.SIP_REGISTRATION, DICT, (entry,), False), bob)
    theirs = sealed(Store(RESOURCE, Kind.SIP_REGISTRATION, DICT, (entry,), False), other)
    assert store_refusal(mine, storage, checks, 1000) is None
    assert store_refusal(theirs, storage, checks, 1000) == NOT_NAMED
    copy = Store(theirs.resource, theirs.kind, theirs.model, theirs.entries, True)
    assert store_refusal(copy, storage, checks, 1000) == NOT_NAMED  # a replica's copy alike
    gateway = sealed(Store(RESOURCE, Kind.GATEWAY, DICT, (entry,), False), other)
    assert store_refusal(gateway, storage, checks, 1000) == NOT_NAMED  # a service, as a user
    ad_hoc = Checks(OVERLAY)
    assert store_refusal(theirs, Storage(), ad_hoc, 1000) is None  # first come
    assert store_refusal(name_store, Storage(), ad_hoc, 1000) == BAD_TICKET  # no authority, no tickets


@given(st.binary(max_size=200), st.one_of(st.none(), st.binary(max_size=40)))
def test_no_entry_bytes_make_a_ticket_but_one_whose_key_is_its_entry_key(value: bytes, key: bytes | None) -> None:
    ticket = read_ticket(Entry(key, value, 0, 60))
    if ticket is not None:
        assert Entry(key, value, 0, 60).key == ticket.entry(0, 60).key and len(value) == 96
