"""Issue 15's attacks on identity, against real peer processes on loopback: a node that joins
under a node id it chose (next to a peer, to take over its range) is refused and counted,
and a node with a key of its own joins as the id its key gives it."""

from __future__ import annotations

import os
import socket

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peerphone.app.config import DEFAULT_OVERLAY, overlay_id
from peerphone.core.ids import RING
from peerphone.core.limits import PROOF_PADDING_BYTES
from peerphone.core.security import Authority, Identity, Trust, proof_challenge
from peerphone.core.wire import decode, encode
from peerphone.core.wire.messages import EMPTY, Code, Dest, DestKind, Message, Proof, Prove

from tests.procs import stat_all, stop
from tests.sip.world import start_overlay

OVERLAY = overlay_id(DEFAULT_OVERLAY)


def _join_as(claimed: int, identity: Identity, target: tuple[str, int]) -> list[Message]:
    """Ask `target` to take us into the ring as `claimed`, and answer its challenge with
    `identity`'s certificate and signature; what it sent us."""
    heard: list[Message] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
        join = Message(32, (claimed,), (Dest(DestKind.RESOURCE, claimed),), 0x7777, Code.JOIN, EMPTY)
        s.sendto(encode(join, OVERLAY), target)
        try:
            while True:  # bounded: the socket's timeout ends it
                msg = decode(s.recvfrom(2048)[0], OVERLAY)
                heard.append(msg)
                if msg.code is Code.PROVE:
                    assert isinstance(msg.body, Prove) and len(msg.body.padding) == PROOF_PADDING_BYTES
                    proof = Proof(identity.certificate, identity.sign(
                        proof_challenge(OVERLAY, msg.txid, msg.via[0], claimed)))
                    answer = Message(32, (claimed,), (Dest(DestKind.NODE, msg.via[0]),), msg.txid, Code.PROVE_ANS,
                                     proof)
                    s.sendto(encode(answer, OVERLAY), target)
        except socket.timeout:
            pass
    return heard


def test_a_join_under_a_chosen_id_is_refused_and_counted():
    peers = start_overlay(3)
    try:
        victim = peers[0]
        host, port = victim.addr.rsplit(":", 1)
        chosen = (victim.node_id - 1) % RING  # right before the victim: its whole range
        forger = Authority(Ed25519PrivateKey.generate()).enroll(os.urandom, node_id=chosen)
        heard = _join_as(chosen, forger, (host, int(port)))
        assert [m.code for m in heard] == [Code.PROVE]  # the challenge, and no JOIN_ANS
        stats = stat_all([p.addr for p in peers])
        assert dict(stats[0].counters).get("refused.identity") == 1
        assert all(chosen not in (s.pred, *s.successors) for s in stats)
    finally:
        stop(peers)


def test_a_node_with_its_own_key_joins_as_its_key_s_id():
    """The control of the test above: the same exchange, proven with the id's own key."""
    peers = start_overlay(2)
    try:
        host, port = peers[0].addr.rsplit(":", 1)
        mine = Identity.ad_hoc(os.urandom, Trust().work_bits)
        heard = _join_as(mine.node_id, mine, (host, int(port)))
        assert [m.code for m in heard] == [Code.PROVE, Code.JOIN_ANS]
        assert dict(stat_all([peers[0].addr])[0].counters).get("refused.identity", 0) == 0
    finally:
        stop(peers)
