"""One-hop routing (Gupta, Liskov, Rodrigues, HotOS 2003) on Chord's ring: every member knows
every member, so every lookup takes one hop.

Rules: the ring (successors, predecessor, stabilize) is Chord's and is kept the same way;
on top of it, the neighbour that notices a change tells every member (ANNOUNCE): the
successor of a newcomer once it adopts it as predecessor, the successor of a node that
left, the predecessor of a node that failed. A newcomer pulls the member list from the
node that let it in, page by page (MEMBERS), each page one datagram. Built for overlays
of 5 to 500 nodes: an announcement costs a datagram per member.
"""

from __future__ import annotations

from dataclasses import dataclass

from .limits import MEMBERS_PER_PAGE
from .node import Entropy, PeerConfig, Purpose, Rng, State
from .overlay.onehop import OneHop
from .ring_peer import RingPeer
from .security import Identity
from .wire.messages import (
    EMPTY,
    Announce,
    Body,
    Code,
    Dest,
    DestKind,
    JoinAns,
    Members,
    MembersAns,
    Message,
    NodeInfo,
)


@dataclass(frozen=True, slots=True)
class _Notice(Purpose):
    """An announcement to one member; nothing to do with its answer."""


@dataclass(frozen=True, slots=True)
class _Sync(Purpose):
    """A page of the member list, pulled after joining."""


class OneHopPeer(RingPeer):
    topology: OneHop

    def __init__(self, me: NodeInfo, config: PeerConfig, identity: Identity, *, rng: Rng, entropy: Entropy,
                 now_ms: int, wall_offset_ms: int = 0) -> None:
        super().__init__(me, config, identity, rng=rng, entropy=entropy, now_ms=now_ms,
                         wall_offset_ms=wall_offset_ms)
        assert isinstance(self.topology, OneHop)
        self._request_handlers.update({Code.ANNOUNCE: self._on_announce, Code.MEMBERS: self._on_members})
        self._answer_handlers.update({_Notice: self._done_notice, _Sync: self._done_sync})

    # -- the changes we notice, told to everyone --

    def _on_update(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        newcomer = not self.topology.knows(sender.node_id)
        answer = super()._on_update(msg, sender, now_ms)
        if newcomer and self.topology.pred == sender:
            self._announce(Announce((sender,), ()), now_ms)  # we are its successor: we tell everyone
        return answer

    def _departed(self, node: NodeInfo, now_ms: int) -> None:
        was_pred = self.topology.pred is not None and node.node_id == self.topology.pred.node_id
        super()._departed(node, now_ms)
        if was_pred:
            self._announce(Announce((), (node.node_id,)), now_ms)

    def _offered(self, node: NodeInfo, now_ms: int) -> None:
        self.topology.learn([node])
        super()._offered(node, now_ms)

    def _node_failed(self, node_id: int, now_ms: int) -> None:
        was_succ = node_id != self.me.node_id and node_id == self.topology.succ.node_id
        super()._node_failed(node_id, now_ms)
        if was_succ and self.state is State.JOINED:
            self._announce(Announce((), (node_id,)), now_ms)  # we were its predecessor

    def _announce(self, news: Announce, now_ms: int) -> None:
        subjects = {n.node_id for n in news.joined} | set(news.failed)
        for member in self.topology.members():
            if member.node_id not in subjects:
                self._request(Code.ANNOUNCE, news, (Dest(DestKind.NODE, member.node_id),), _Notice(), now_ms,
                              target=member.addr)

    def _on_announce(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        body = msg.body
        assert isinstance(body, Announce)
        # News, not facts: a newcomer joins our table once it answers us, a failed node
        # leaves it once it does not (a forged announcement moves nothing).
        for node in body.joined:
            self._verify(node, now_ms, offer=True)
        for node_id in body.failed:
            addr = self.topology.address_of(node_id)
            if node_id != self.me.node_id and addr is not None:
                self._probe(NodeInfo(node_id, addr), now_ms)
        return Code.ANNOUNCE_ANS, EMPTY

    def _done_notice(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        pass

    # -- the member list, pulled by a newcomer --

    def _done_join(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        joining = self.state is State.JOINING
        super()._done_join(purpose, answer, now_ms)
        if joining and self.state is State.JOINED and answer is not None and isinstance(answer.body, JoinAns):
            self._sync_page(answer.body.responder, 0, now_ms)

    def _on_members(self, msg: Message, sender: NodeInfo, now_ms: int) -> tuple[Code, Body]:
        body = msg.body
        assert isinstance(body, Members)
        everyone = self.topology.members() + [self.me]
        pages = max(1, -(-len(everyone) // MEMBERS_PER_PAGE))
        start = body.page * MEMBERS_PER_PAGE
        return Code.MEMBERS_ANS, MembersAns(body.page, pages, tuple(everyone[start:start + MEMBERS_PER_PAGE]))

    def _sync_page(self, node: NodeInfo, page: int, now_ms: int) -> None:
        self._request(Code.MEMBERS, Members(page), (Dest(DestKind.NODE, node.node_id),), _Sync(), now_ms,
                      target=node.addr)

    def _done_sync(self, purpose: Purpose, answer: Message | None, now_ms: int) -> None:
        if answer is None or not isinstance(answer.body, MembersAns):
            return
        self.topology.learn(answer.body.nodes)
        if answer.body.page == 0 and answer.via:
            source = self.topology.address_of(answer.via[-1])
            for page in range(1, answer.body.pages):
                if source is not None:
                    self._sync_page(NodeInfo(answer.via[-1], source), page, now_ms)
