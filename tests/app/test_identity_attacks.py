"""Issue 15's attacks on identity, against real peer processes on loopback: a node that joins
under a node id it chose (next to a peer, to take over its range) is refused and counted,
whether its certificate names that id (no link) or its link proves another (dropped), and a
node with a key of its own joins as the id its key gives it."""

from __future__ import annotations

import os
import socket

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peerphone.app.config import DEFAULT_OVERLAY, overlay_id
from peerphone.core.ids import RING
from peerphone.core.security import Authority, Identity, Trust
from peerphone.core.wire import decode, encode
from peerphone.core.wire.messages import EMPTY, Code, Dest, DestKind, Message
from peerphone.net.links import Links

from tests.procs import stat_all, stop
from tests.sip.world import start_overlay

OVERLAY = overlay_id(DEFAULT_OVERLAY)


def _join_as(claimed: int, identity: Identity, target: tuple[str, int]) -> list[Message]:
    """Ask `target`, over a link of `identity`'s, to take us into the ring as `claimed`; what
    it sent us."""
    heard: list[Message] = []
    links = Links(identity, Trust().admit)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
        join = Message(32, (claimed,), (Dest(DestKind.RESOURCE, claimed),), 0x7777, Code.JOIN, EMPTY)
        links.send(encode(join, OVERLAY), target, now_ms=0)
        try:
            while True:  # bounded: the socket's timeout ends it
                for data, to in links.datagrams_to_send():
                    s.sendto(data, to)
                data, addr = s.recvfrom(2048)
                heard += [decode(carried, OVERLAY) for carried in links.receive(data, (addr[0], addr[1]), now_ms=0)[1]]
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
        assert _join_as(chosen, forger, (host, int(port))) == []  # its certificate gets it no link
        # A key of its own gets a link, as that key's id; a JOIN over it as the chosen id is dropped:
        assert _join_as(chosen, Identity.ad_hoc(os.urandom, Trust().work_bits), (host, int(port))) == []
        stats = stat_all([p.addr for p in peers])
        counters = dict(stats[0].counters)
        assert counters.get("refused.link_identity", 0) >= 1 and counters.get("drop.link_id", 0) >= 1, counters
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
        assert [m.code for m in heard] == [Code.JOIN_ANS]  # the link proved the id: no challenge
        counters = dict(stat_all([peers[0].addr])[0].counters)
        assert counters.get("refused.link_identity", 0) == 0 and counters.get("drop.link_id", 0) == 0
    finally:
        stop(peers)
