"""Identities (issue 15): certificates as the overlay reads them, and a node that claims an id
must prove it with that id's key before any request of its own counts.

The attacker answers the victim's PROVE itself: with a certificate of another id, with an
honest node's proof for another challenge, with a certificate it issued itself, or with bytes.
"""

from __future__ import annotations

import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from peerphone.core.ids import RING
from peerphone.core.limits import CERTIFICATE_BYTES_MAX
from peerphone.core.peer import PeerConfig, State, make_peer
from peerphone.core.security import (
    Authority,
    Identity,
    Trust,
    id_of_key,
    link_certificate,
    link_certified,
    proof_challenge,
    puzzle_solved,
    read_certificate,
    verify,
)
from peerphone.core.wire import decode, encode
from peerphone.core.wire.messages import EMPTY, Code, Dest, DestKind, Message, Proof, Prove

from tests.core.test_abuse import STRANGER, forge
from tests.ring import OVERLAY, Ring, build

RNG = random.Random(15)
AD_HOC = Identity.ad_hoc(RNG.randbytes, 0, ("sip:alice@peerphone.example",))
AUTHORITY = Authority(Ed25519PrivateKey.from_private_bytes(RNG.randbytes(32)))
ENROLLED = AUTHORITY.enroll(RNG.randbytes, ("sip:bob@peerphone.example",), node_id=12345)


def test_an_ad_hoc_id_is_its_key_s_hash_and_solves_the_puzzle():
    identity = Identity.ad_hoc(RNG.randbytes, 8)
    cred = identity.credential
    assert cred.node_id == id_of_key(cred.public_key) and cred.issuer_key == cred.public_key
    assert puzzle_solved(cred.node_id, 8)
    assert Trust(work_bits=8).admit(identity.certificate) == cred
    assert AD_HOC.credential.names == ("sip:alice@peerphone.example",)


def test_an_ad_hoc_overlay_refuses_an_unsolved_puzzle_and_a_chosen_id():
    minted = (Identity.ad_hoc(RNG.randbytes, 0) for _ in range(64))
    unsolved = next(i for i in minted if not puzzle_solved(i.node_id, 4))
    assert Trust(work_bits=4).admit(unsolved.certificate) is None
    assert Trust(work_bits=0).admit(ENROLLED.certificate) is None  # id 12345 is not its key's hash


def test_an_enrolled_overlay_admits_its_authority_s_certificates_only():
    trust = Trust(AUTHORITY.public_key)
    assert trust.admit(ENROLLED.certificate).node_id == 12345
    assert trust.admit(AD_HOC.certificate) is None  # self-signed
    other = Authority(Ed25519PrivateKey.from_private_bytes(RNG.randbytes(32)))
    assert trust.admit(other.enroll(RNG.randbytes, node_id=12345).certificate) is None


@settings(max_examples=300)
@given(st.sampled_from([AD_HOC.certificate, ENROLLED.certificate]), st.data())
def test_a_certificate_changed_in_one_bit_is_refused_or_says_the_same(der, data):
    """A change in what is signed breaks the signature; the few bits outside it (DER framing
    the parser forgives) can change nothing a node reads."""
    bit = data.draw(st.integers(0, len(der) * 8 - 1))
    flipped = bytearray(der)
    flipped[bit // 8] ^= 1 << (bit % 8)
    read, original = read_certificate(bytes(flipped)), read_certificate(der)
    assert read is None or (read.node_id, read.names, read.public_key, read.issuer_key, read.serial) == (
        original.node_id, original.names, original.public_key, original.issuer_key, original.serial)


@settings(max_examples=300)
@given(st.binary(max_size=CERTIFICATE_BYTES_MAX + 64) | st.sampled_from([AD_HOC.certificate]).flatmap(
    lambda der: st.integers(0, len(der)).map(lambda n: der[:n])))
def test_certificate_reading_never_raises(der):
    cred = read_certificate(der)
    assert cred is None or cred.der == der


LINK_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()
LINK = link_certificate(AD_HOC, LINK_KEY, RNG.randbytes)


def test_a_link_certificate_holds_for_its_node_only():
    assert link_certified(LINK, AD_HOC.credential)
    assert not link_certified(LINK, ENROLLED.credential)
    assert not link_certified(link_certificate(ENROLLED, LINK_KEY, RNG.randbytes), AD_HOC.credential)


@settings(max_examples=300)
@given(st.binary(max_size=CERTIFICATE_BYTES_MAX + 64) | st.integers(0, len(LINK) * 8 - 1).map(
    lambda bit: LINK[:bit // 8] + bytes([LINK[bit // 8] ^ (1 << (bit % 8))]) + LINK[bit // 8 + 1:]))
def test_reading_a_link_certificate_never_raises_and_a_changed_one_holds_only_if_the_same(der):
    """A bit flipped in what is signed breaks the signature; one outside it (DER framing the
    parser forgives) leaves the certificate it was."""
    held = link_certified(der, AD_HOC.credential)
    assert not held or x509.load_der_x509_certificate(der).public_key() == LINK_KEY


# -- on the wire, against a ring --

def _challenge_to_stranger(ring: Ring) -> Message:
    ring.run(ring.latency_ms)
    sent = [decode(d, OVERLAY) for d, to in ring.strays if to == STRANGER]
    return next(m for m in sent if m.code is Code.PROVE)


def _answer(ring: Ring, victim, challenge: Message, claimed: int, proof: Proof) -> None:
    answer = Message(32, (claimed,), (Dest(DestKind.NODE, victim.me.node_id),), challenge.txid, Code.PROVE_ANS, proof)
    victim.receive_datagram(encode(answer, OVERLAY), STRANGER, now_ms=ring.now_ms)
    ring.flush(victim)


def _claim_predecessor(ring: Ring, victim, claimed: int, prove) -> None:
    forge(ring, victim, Code.UPDATE, EMPTY, (claimed,))
    challenge = _challenge_to_stranger(ring)
    _answer(ring, victim, challenge, claimed, prove(challenge))
    ring.run(1000)


def test_a_certificate_of_another_id_proves_nothing():
    ring = build(5)
    victim = ring.live()[0]
    pred = victim.topology.pred
    claimed = (victim.me.node_id - 1) % RING  # just before the victim: it would take the victim's range
    mine = ring.identity()

    def prove(challenge: Message) -> Proof:
        return Proof(mine.certificate, mine.sign(proof_challenge(OVERLAY, challenge.txid, victim.me.node_id, claimed)))

    _claim_predecessor(ring, victim, claimed, prove)
    assert victim.topology.pred == pred
    assert victim.counters["refused.identity"] == 1


def test_an_honest_node_s_proof_for_another_challenge_is_no_proof():
    ring = build(5)
    victim, honest = ring.live()[0], ring.live()[2]
    pred = victim.topology.pred
    stale = Proof(honest.identity.certificate, honest.identity.sign(
        proof_challenge(OVERLAY, 1, victim.me.node_id, honest.me.node_id)))
    _claim_predecessor(ring, victim, honest.me.node_id, lambda challenge: stale)
    assert victim.topology.pred == pred
    assert victim.counters["refused.identity"] == 1


def test_a_self_issued_certificate_with_a_chosen_id_is_refused():
    ring = build(5)
    victim = ring.live()[0]
    pred = victim.topology.pred
    claimed = (victim.me.node_id - 1) % RING
    forger = Authority(Ed25519PrivateKey.from_private_bytes(RNG.randbytes(32))).enroll(RNG.randbytes, node_id=claimed)

    def prove(challenge: Message) -> Proof:
        return Proof(forger.certificate, forger.sign(proof_challenge(OVERLAY, challenge.txid, victim.me.node_id,
                                                                     claimed)))

    _claim_predecessor(ring, victim, claimed, prove)
    assert victim.topology.pred == pred
    assert victim.counters["refused.identity"] == 1


def test_the_right_key_proves_and_its_request_then_counts():
    """The control: the same exchange with the claimed id's own key succeeds."""
    ring = build(5)
    victim = ring.live()[0]
    newcomer = ring.identity()

    def prove(challenge: Message) -> Proof:
        return Proof(newcomer.certificate, newcomer.sign(proof_challenge(OVERLAY, challenge.txid, victim.me.node_id,
                                                                         newcomer.node_id)))

    _claim_predecessor(ring, victim, newcomer.node_id, prove)
    assert victim.counters["refused.identity"] == 0
    assert victim.counters["unproven"] == 0
    assert victim.counters["sent.UPDATE_ANS"] >= 1 and any(
        m.code is Code.UPDATE_ANS for m in (decode(d, OVERLAY) for d, to in ring.strays if to == STRANGER))


@pytest.mark.parametrize("padding", [0, 100])
def test_a_prove_too_small_for_the_proof_is_not_answered(padding):
    ring = build(3)
    node = ring.live()[0]
    forge(ring, node, Code.PROVE, Prove(bytes(padding)), (4242,))
    assert [t for _, _, _, t in ring.wire if t == STRANGER] == []
    assert node.counters["drop.prove_unpadded"] == 1


def test_a_prove_is_answered_no_larger_than_it_came_with_a_proof_that_holds():
    ring = build(3)
    node = ring.live()[0]
    sent = forge(ring, node, Code.PROVE, Prove(bytes(CERTIFICATE_BYTES_MAX + 64)), (4242,))
    answers = [(d, decode(d, OVERLAY)) for _, d, _, t in ring.wire if t == STRANGER]
    assert len(answers) == 1
    data, answer = answers[0]
    assert len(data) <= len(sent)
    cred = ring.trust.admit(answer.body.certificate)
    assert cred is not None and cred.node_id == node.me.node_id
    assert verify(cred.public_key, answer.body.signature, proof_challenge(OVERLAY, 0xF0F0, 4242, node.me.node_id))


def test_a_node_the_authority_did_not_enroll_cannot_join_an_enrolled_ring():
    ring = Ring(seed=3, enrolled=True)
    first = ring.add()
    ring.run(100)
    stranger = make_peer(Identity.ad_hoc(RNG.randbytes, 0), ("10.0.0.99", 4000),
                         PeerConfig(OVERLAY, ring.timing, trust=Trust(work_bits=0)), rng=ring.rng,
                         entropy=ring.rng.randbytes, now_ms=ring.now_ms)
    ring.nodes[stranger.me.addr] = stranger
    stranger.join([first.me.addr], now_ms=ring.now_ms)
    ring.flush(stranger)
    ring.run(10_000)  # every retransmission of its JOIN, and then some
    assert stranger.state is not State.JOINED
    assert first.counters["refused.identity"] >= 2 and first.counters["sent.JOIN_ANS"] == 0
    assert first.topology.alone
