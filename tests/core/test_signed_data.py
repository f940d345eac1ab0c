"""Signed stored values and their access rules (issue 15): every attack refused where the
value is stored, and counted; a lying storing peer caught by the reader."""

from __future__ import annotations

from dataclasses import replace

from peerphone.core import security
from peerphone.core.access import EXPIRED, NOT_OWNER, UNSIGNED, Checks, store_refusal
from peerphone.core.ids import id_from_name
from peerphone.core.ingress import BoundedLru
from peerphone.core.limits import REGISTRATION_LIFETIME_S_MAX
from peerphone.core.peer import PeerNode
from peerphone.core.security import Signer, SigningKey
from peerphone.core.storage import Storage
from peerphone.core.usages import MODEL_OF, Kind
from peerphone.core.wire.messages import ARRAY_APPEND, DataModel, Entry, Store

from tests.core.test_peer import completed
from tests.ring import OVERLAY, Ring, build, sealed

BOB = id_from_name("sip:bob@peerphone.local")
REG, ARRAY, DICT = Kind.SIP_REGISTRATION, DataModel.ARRAY, DataModel.DICTIONARY
BOB_KEY, MALLORY_KEY = SigningKey(b"b" * 32), SigningKey(b"m" * 32)
T0 = 1_000_000  # storage times on the writers' wall clock


def registration(signer: Signer, contact: bytes, stamp: int = T0, lifetime_s: int = 600,
                 value: bytes | None = None) -> Store:
    entry = Entry(contact, b"at " + contact if value is None else value, stamp, lifetime_s)
    return sealed(Store(BOB, REG, DICT, (entry,), False), signer)


def stored(storage: Storage, req: Store, wall_ms: int = T0) -> object:
    """What the storing peer does with `req`: its refusal, or the store's outcome."""
    return store_refusal(req, storage, Checks(OVERLAY), wall_ms) or storage.store(req, now_ms=0)


def test_only_the_first_key_of_a_registration_stores_under_it() -> None:
    storage = Storage()
    assert isinstance(stored(storage, registration(BOB_KEY, b"desk")), tuple)
    assert stored(storage, registration(MALLORY_KEY, b"mallory's phone")) is NOT_OWNER  # a new contact
    assert stored(storage, registration(MALLORY_KEY, b"desk", T0 + 1)) is NOT_OWNER  # over Bob's contact
    assert isinstance(stored(storage, registration(BOB_KEY, b"mobile", T0 + 1)), tuple)
    assert len(storage.fetch(BOB, REG, now_ms=0).entries) == 2


def test_an_unsigned_or_altered_entry_is_refused() -> None:
    storage = Storage()
    unsigned = Store(BOB, REG, DICT, (Entry(b"desk", b"at desk", T0, 600),), False)
    assert stored(storage, unsigned) is UNSIGNED
    honest = registration(BOB_KEY, b"desk")
    altered = replace(honest, entries=(replace(honest.entries[0], value=b"at mallory's"),))
    assert stored(storage, altered) is UNSIGNED
    longer = replace(honest, entries=(replace(honest.entries[0], lifetime_s=601),))  # more than signed
    assert stored(storage, longer) is UNSIGNED
    elsewhere = replace(honest, resource=id_from_name("sip:carol@peerphone.local"))
    assert stored(storage, elsewhere) is UNSIGNED
    assert len(storage) == 0


def test_a_registration_replayed_after_bob_moved_loses() -> None:
    storage = Storage()
    old = registration(BOB_KEY, b"desk")
    assert isinstance(stored(storage, old), tuple)
    # Bob moves: a new contact, and the old one removed (a tombstone as long as it could live).
    assert isinstance(stored(storage, registration(BOB_KEY, b"mobile", T0 + 5_000)), tuple)
    removal = registration(BOB_KEY, b"desk", T0 + 5_000, REGISTRATION_LIFETIME_S_MAX, value=b"")
    assert isinstance(stored(storage, removal), tuple)
    replayed = stored(storage, old, wall_ms=T0 + 10_000)
    assert not isinstance(replayed, tuple) and "newer" in replayed.reason  # type: ignore[union-attr]
    assert [e.key for e in storage.fetch(BOB, REG, now_ms=0).entries] == [b"mobile"]  # tombstones unseen
    # Once its signed lifetime is over, the old value is refused wherever it is replayed.
    assert stored(Storage(), old, wall_ms=T0 + 600_000 + 60_000) is EXPIRED


def test_anyone_appends_a_message_but_only_its_writer_or_the_recipient_removes_it() -> None:
    storage = Storage()
    assert isinstance(stored(storage, registration(BOB_KEY, b"desk")), tuple)
    alice, mallory = SigningKey(b"a" * 32), MALLORY_KEY

    def message(signer: Signer, key: int, value: bytes, stamp: int) -> Store:
        return sealed(Store(BOB, Kind.OFFLINE_MESSAGE, ARRAY, (Entry(key, value, stamp, 600),), False), signer)

    appended = stored(storage, message(alice, ARRAY_APPEND, b"hi bob", T0))
    assert [e.key for e in appended] == [0]  # type: ignore[attr-defined]
    assert isinstance(stored(storage, message(mallory, ARRAY_APPEND, b"spam", T0)), tuple)
    assert stored(storage, message(mallory, 0, b"", T0 + 1)) is NOT_OWNER  # removing Alice's
    assert isinstance(stored(storage, message(BOB_KEY, 0, b"", T0 + 1)), tuple)  # Bob read it
    assert isinstance(stored(storage, message(mallory, 1, b"", T0 + 1)), tuple)  # its own
    assert storage.fetch(BOB, Kind.OFFLINE_MESSAGE, now_ms=0).entries == ()


def test_each_gateway_owns_its_own_entry_under_a_domain() -> None:
    storage = Storage()
    domain = id_from_name("gateway:example.com")
    one, two = SigningKey(b"1" * 32), SigningKey(b"2" * 32)

    def announce(signer: Signer, key: bytes, stamp: int) -> Store:
        return sealed(Store(domain, Kind.GATEWAY, DICT, (Entry(key, b"front", stamp, 180),), False), signer)

    assert isinstance(stored(storage, announce(one, b"one", T0)), tuple)
    assert isinstance(stored(storage, announce(two, b"two", T0)), tuple)
    assert stored(storage, announce(two, b"one", T0 + 1)) is NOT_OWNER


def bob_registered(ring: Ring, front: PeerNode) -> None:
    """Bob's record stored through `front`, signed with his key (the ring's clock is the wall's)."""
    h = front.store(BOB, REG, MODEL_OF[REG], [Entry(b"desk", b"at desk", ring.now_ms, 600)], now_ms=ring.now_ms,
                    signer=BOB_KEY)
    ring.flush(front)
    ring.run(3000)
    assert completed(ring, h, front).error is None


def test_a_node_stores_over_a_registration_through_the_overlay_and_is_refused_and_counted() -> None:
    ring = build(5, seed=4)
    bob, mallory = ring.live()[1], ring.add(client=True, bootstrap=ring.live()[0].me.addr)
    now = ring.now_ms
    bob_registered(ring, bob)
    h = mallory.store(BOB, REG, MODEL_OF[REG], [Entry(b"desk", b"at mallory's", now + 1, 600)], now_ms=ring.now_ms)
    ring.flush(mallory)
    ring.run(2000)
    assert "another key" in completed(ring, h, mallory).error.reason  # type: ignore[union-attr]
    holder = next(n for n in ring.live() if n.me.node_id == ring.responsible(BOB))
    assert holder.counters["refused.not_owner"] == 1
    assert holder.storage.fetch(BOB, REG, now_ms=ring.now_ms).entries[0].value == b"at desk"


def test_a_reader_rejects_what_a_storing_peer_altered_and_asks_another_replica(topology) -> None:
    ring = build(6, seed=9, topology=topology)
    writer, reader = ring.live()[0], ring.add(client=True, bootstrap=ring.live()[2].me.addr)
    now = ring.now_ms
    bob_registered(ring, writer)
    liar = next(n for n in ring.live() if n.me.node_id == ring.responsible(BOB))
    held = liar.storage.fetch(BOB, REG, now_ms=ring.now_ms).entries[0]
    forged = Store(BOB, REG, DICT, (replace(held, value=b"at mallory's", storage_time_ms=now + 1),), True)
    assert isinstance(liar.storage.store(forged, now_ms=ring.now_ms), tuple)  # it lies from its own memory
    h = reader.fetch(BOB, REG, now_ms=ring.now_ms)
    ring.flush(reader)
    ring.run(3000)
    done = completed(ring, h, reader)
    assert done.error is None and [e.value for e in done.answer.entries] == [b"at desk"]  # type: ignore[union-attr]
    assert done.responder != liar.me.node_id
    assert sum(n.counters["refused.fetched_unsigned"] for n in [reader, *ring.live()]) == 1



def test_a_seal_verified_once_is_not_verified_again_but_an_altered_copy_is(monkeypatch) -> None:
    calls = []
    real_verify = security.verify
    monkeypatch.setattr(security, "verify", lambda *a: calls.append(1) or real_verify(*a))
    verified: security.VerifiedSeals = BoundedLru(8)
    entry = registration(BOB_KEY, b"desk").entries[0]
    assert security.seal_holds(entry, OVERLAY, BOB, REG, DICT, verified)
    assert security.seal_holds(replace(entry, lifetime_s=300), OVERLAY, BOB, REG, DICT, verified)  # counted down
    assert len(calls) == 1
    altered = replace(entry, value=b"at mallory's")  # the same seal over other content
    assert not security.seal_holds(altered, OVERLAY, BOB, REG, DICT, verified)
    assert not security.seal_holds(altered, OVERLAY, BOB, REG, DICT, verified)
    assert len(calls) == 3
