"""The deterministic simulator: the real `PeerNode`s on a virtual clock and one event heap.

Everything random comes from one `random.Random(seed)`: node ids, each node's own
rng and entropy, latencies, loss, churn and workload. Nothing is iterated in hash
order, so one seed gives one byte-identical report (TigerBeetle's and
FoundationDB's discipline, STYLE.md habit 10).
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import Callable, cast

from ..core.errors import ErrorCode
from ..core.events import Event, Joined, RequestCompleted
from ..core.ids import ID_BITS, RING
from ..core.kademlia_peer import KademliaPeer
from ..core.limits import REFRESH_ROUNDS, Timing
from ..core.overlay import Topology
from ..core.overlay.onehop import OneHop
from ..core.peer import PeerConfig, PeerNode, State, make_peer
from ..core.ring_peer import RingPeer
from ..core.security import Identity, Trust
from ..core.wire.messages import Addr, Error, StatAns
from .network import Network, NetworkModel

SIM_OVERLAY_ID = 0x51A0
# Ad hoc, without the puzzle: the simulator measures routing and roles, not the cost of minting
# 10,000 identities (each about 2**12 key pairs at the default).
SIM_TRUST = Trust(work_bits=0)
DELIVER, TIMER, CALL = 0, 1, 2
# Why a request ended without an answer when its requester stopped (`RequestCompleted.error.reason`).
ROLE_CHANGED, FAILED = "the requester changed its role", "the requester failed"
REQUESTER_STOPPED = (ROLE_CHANGED, FAILED)


@dataclass
class Simulation:
    seed: int
    timing: Timing
    model: NetworkModel = field(default_factory=NetworkModel)
    successors_kept: int = 8
    topology: Topology = Topology.CHORD
    now_ms: int = 0
    nodes: dict[Addr, PeerNode] = field(default_factory=dict)
    live: list[Addr] = field(default_factory=list)  # live peers, in join order: deterministic choices
    clients: list[Addr] = field(default_factory=list)  # attached clients (sim/roles.py), in attach order
    events_run: int = 0
    datagrams: int = 0
    # Whoever runs beside a node (its SIP front) hears its other events: tunnelled payloads, attachments.
    on_event: Callable[[Addr, Event], None] | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.network = Network(self.model, random.Random(self.rng.getrandbits(64)))
        self._heap: list[tuple[int, int, int, object, object, object]] = []
        self._seq = 0
        self._timer_at: dict[Addr, int] = {}
        self._live_index: dict[Addr, int] = {}
        self._next_host = 0
        self._waiting: dict[tuple[Addr, int], Callable[[RequestCompleted], None]] = {}
        self._joined_ids: list[int] = []
        self._client_set: set[Addr] = set()

    # -- the event heap --

    def _push(self, at_ms: int, kind: int, a: object, b: object = None, c: object = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_ms, self._seq, kind, a, b, c))

    def call_at(self, at_ms: int, fn: Callable[[], None]) -> None:
        self._push(at_ms, CALL, fn)

    def run_until(self, end_ms: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= end_ms:
            at_ms, _, kind, a, b, c = heapq.heappop(heap)
            self.now_ms = at_ms
            self.events_run += 1
            if kind == CALL:
                cast(Callable[[], None], a)()
                continue
            addr = cast(Addr, a)
            if not self.is_running(addr):
                continue
            node = self.nodes[addr]
            if kind == DELIVER:
                node.receive_datagram(cast(bytes, b), cast(Addr, c), now_ms=at_ms)
            elif self._timer_at.get(addr) == at_ms:
                del self._timer_at[addr]
                node.handle_timer(now_ms=at_ms)
            else:
                continue  # a timer that was moved since
            self._flush(node)
        self.now_ms = max(self.now_ms, end_ms)

    def _flush(self, node: PeerNode) -> None:
        src = node.me.addr
        # No NAT nor firewall in the simulator: the other port's datagrams arrive as any other.
        for data, dst in node.datagrams_to_send() + node.datagrams_from_other_port():
            self.datagrams += 1
            if dst not in self.nodes:
                continue
            for at_ms in self.network.deliveries(src, dst, self.now_ms):
                self._push(at_ms, DELIVER, dst, data, src)
        for event in node.events():
            if isinstance(event, Joined) and not node.config.client:
                insort(self._joined_ids, event.node_id)
            if isinstance(event, RequestCompleted):
                done = self._waiting.pop((src, event.handle), None)
                if done is not None:
                    done(event)
            elif self.on_event is not None:
                self.on_event(src, event)
        deadline = node.next_deadline_ms()
        if deadline is not None and self._timer_at.get(src) != deadline:
            self._timer_at[src] = deadline
            self._push(deadline, TIMER, src)

    # -- membership --

    def new_node(self) -> PeerNode:
        self._next_host += 1
        h = self._next_host
        addr: Addr = (f"10.{h >> 16 & 255}.{h >> 8 & 255}.{h & 255}", 6084)
        self.network.add_host(addr)
        seed = self.rng.getrandbits(64)
        node = self._make(self._identity(), addr, seed, client=False)
        self._live_index[addr] = len(self.live)
        self.live.append(addr)
        return node

    def _identity(self) -> Identity:
        return Identity.ad_hoc(self.rng.randbytes, SIM_TRUST.work_bits)

    def _make(self, identity: Identity, addr: Addr, seed: int, *, client: bool) -> PeerNode:
        node_rng = random.Random(seed)
        # The simulator's clients are battery handsets: no reach tests (app/roles.py config_for).
        config = PeerConfig(SIM_OVERLAY_ID, self.timing, client=client, attach=client, reach_check=not client,
                            successors_kept=self.successors_kept, topology=self.topology, trust=SIM_TRUST)
        node = make_peer(identity, addr, config, rng=node_rng, entropy=node_rng.randbytes, now_ms=self.now_ms)
        self.nodes[addr] = node
        return node

    def add_client(self, bootstrap: list[Addr]) -> PeerNode:
        """A new client on a host of its own, attaching through `bootstrap`."""
        self._next_host += 1
        h = self._next_host
        addr: Addr = (f"10.{h >> 16 & 255}.{h >> 8 & 255}.{h & 255}", 6084)
        self.network.add_host(addr)
        node = self._make(self._identity(), addr, self.rng.getrandbits(64), client=True)
        self._client_set.add(addr)
        self.clients.append(addr)
        node.join(bootstrap, now_ms=self.now_ms)
        self._flush(node)
        return node

    def leave(self, addr: Addr) -> None:
        """The node at `addr` leaves gracefully (its values handed over); it runs until it has."""
        node = self.nodes[addr]
        node.leave(now_ms=self.now_ms)
        self._flush(node)

    def become(self, addr: Addr, *, client: bool, bootstrap: list[Addr]) -> PeerNode:
        """The node at `addr` takes the other role, with its id and address (as UdpDriver.change_role
        does on its socket): a client attaches through `bootstrap`, a peer joins through it. A
        peer that becomes a client should have left first (its values handed over)."""
        old = self.nodes[addr]
        if addr in self._live_index:
            self.fail(addr, ROLE_CHANGED)  # its requests end there
        else:
            self._client_set.discard(addr)
            if addr in self.clients:
                self.clients.remove(addr)
            self._fail_waiting(addr, ROLE_CHANGED)  # once it is out of the draws, as in fail
        node = self._make(old.identity, addr, self.rng.getrandbits(64), client=client)
        if client:
            self._client_set.add(addr)
            self.clients.append(addr)
        else:
            self._live_index[addr] = len(self.live)
            self.live.append(addr)
        node.join(bootstrap, now_ms=self.now_ms)
        self._flush(node)
        return node

    def join(self, bootstrap: PeerNode | None) -> PeerNode:
        node = self.new_node()
        node.join([bootstrap.me.addr] if bootstrap else [], now_ms=self.now_ms)
        self._flush(node)
        return node

    def fail(self, addr: Addr, reason: str = FAILED) -> None:
        """The node stops dead: no leave, no more datagrams in or out."""
        index = self._live_index.pop(addr)
        last = self.live.pop()
        if last != addr:
            self.live[index] = last
            self._live_index[last] = index
        self._timer_at.pop(addr, None)
        node_id = self.nodes[addr].me.node_id
        i = bisect_left(self._joined_ids, node_id)
        if i < len(self._joined_ids) and self._joined_ids[i] == node_id:
            del self._joined_ids[i]
        self._fail_waiting(addr, reason)  # once it is out of the draws: what its requesters do next runs elsewhere

    def _fail_waiting(self, addr: Addr, reason: str) -> None:
        """End the requests the stopped node at `addr` was making, as UdpDriver does when its
        node changes role: the workload learns they ended rather than waiting for ever."""
        for key in [k for k in self._waiting if k[0] == addr]:
            done = self._waiting.pop(key)
            done(RequestCompleted(key[1], None, Error(ErrorCode.UNREACHABLE, reason), 0, None))

    def is_live(self, addr: Addr) -> bool:
        return addr in self._live_index

    def is_running(self, addr: Addr) -> bool:
        """A live peer, or an attached client."""
        return addr in self._live_index or addr in self._client_set

    def random_live(self) -> PeerNode:
        return self.nodes[self.live[self.rng.randrange(len(self.live))]]

    def random_running(self) -> PeerNode:
        """A random live peer or client (with no clients, the very draw of `random_live`)."""
        i = self.rng.randrange(len(self.live) + len(self.clients))
        return self.nodes[self.live[i] if i < len(self.live) else self.clients[i - len(self.live)]]

    def random_joined(self) -> PeerNode:
        """A random live node that has finished joining: only it can make requests. Under churn or
        role changes a few live nodes are still joining; drawing again skips them."""
        for _ in range(64):
            node = self.random_live()
            if node.state is State.JOINED:
                return node
        return self.nodes[next(a for a in self.live if self.nodes[a].state is State.JOINED)]

    def live_nodes(self) -> list[PeerNode]:
        return [self.nodes[a] for a in self.live]

    def warm_start(self, count: int) -> None:
        """`count` nodes whose routing tables are what maintenance converges to.

        Building a 16,384-node overlay join by join costs simulated hours; lookup path
        lengths, failure and churn are measured from the converged state, as the
        Chord paper does (§6). The protocol runs from here on.
        """
        nodes = [self.new_node() for _ in range(count)]
        ordered = sorted(nodes, key=lambda n: n.me.node_id)
        ids = [n.me.node_id for n in ordered]
        for i, node in enumerate(ordered):
            node.join([], now_ms=self.now_ms)
            if isinstance(node, KademliaPeer):
                self._fill_buckets(node, ordered, ids)
                continue
            assert isinstance(node, RingPeer)
            successors = [ordered[(i + k) % count].me for k in range(1, min(count, self.successors_kept + 1))]
            if successors:
                node.topology.adopt_successors(successors[0], successors[1:])
                node.topology.set_pred(ordered[i - 1].me)
            if isinstance(node.topology, OneHop):
                node.topology.learn(n.me for n in ordered)
                continue
            index = 0
            while True:
                owner = ordered[bisect_left(ids, node.topology.finger_start(index)) % count]
                index = node.topology.set_finger(index, owner.me)
                if index == 0:
                    break
        for node in nodes:
            self._flush(node)

    def _fill_buckets(self, node: KademliaPeer, ordered: list[PeerNode], ids: list[int]) -> None:
        """Each bucket's range is a run of the sorted ids (one id prefix): up to k of
        its nodes, chosen at random as a long-lived node would have met them."""
        me = node.me.node_id
        refresh_ms = self.timing.maintenance_interval_ms * REFRESH_ROUNDS
        for index in range(ID_BITS):
            low = ((me >> index) ^ 1) << index
            start, end = bisect_left(ids, low), bisect_left(ids, low + (1 << index))
            chosen = range(start, end)
            if end - start > node.table.k:
                chosen = range(0)
                for j in sorted(self.rng.sample(range(start, end), node.table.k)):
                    node.table.seen(ordered[j].me)
            for j in chosen:
                node.table.seen(ordered[j].me)
            # Last refreshed at some point of the past refresh period, as in a steady
            # state: not all at once, and not never (which would refresh every bucket now).
            node.table.touch(node.table.id_in_bucket(index, 0), self.now_ms - self.rng.randrange(refresh_ms))

    # -- operations with outcomes --

    def request(self, node: PeerNode, start: Callable[[PeerNode, int], int],
                done: Callable[[RequestCompleted], None]) -> None:
        if node.state is not State.JOINED:  # it cannot ask yet: a failure the workload counts, not a silent loss
            done(RequestCompleted(-1, None, Error(ErrorCode.UNREACHABLE, "requester not joined"), 0, None))
            return
        handle = start(node, self.now_ms)
        self._waiting[(node.me.addr, handle)] = done
        self._flush(node)

    def oracle(self) -> "Oracle":
        """The ring of live, joined nodes; kept sorted as nodes join and fail."""
        return Oracle(self._joined_ids)


@dataclass(frozen=True)
class Oracle:
    """The sorted ring of live nodes: what every routing table should agree with."""

    ids: list[int]

    def successor(self, target: int) -> int:
        i = bisect_left(self.ids, target)
        return self.ids[i % len(self.ids)]

    def xor_closest(self, target: int, skip: int | None = None) -> int:
        """The id closest to `target` by XOR (other than `skip`): down the binary trie
        of the sorted ids, taking the target's branch wherever it is not empty."""
        lo, hi, prefix = 0, len(self.ids), 0
        for bit in range(ID_BITS - 1, -1, -1):
            split = bisect_left(self.ids, prefix | 1 << bit, lo, hi)
            zeros, ones = (lo, split), (split, hi)
            near, far = (ones, zeros) if target >> bit & 1 else (zeros, ones)
            if self._count(near, skip) == 0:
                near = far
            lo, hi = near
            if near is ones:
                prefix |= 1 << bit
        return self.ids[lo]

    def _count(self, span: tuple[int, int], skip: int | None) -> int:
        lo, hi = span
        inside = skip is not None and lo < hi and bisect_left(self.ids, skip, lo, hi) < hi \
            and self.ids[bisect_left(self.ids, skip, lo, hi)] == skip
        return hi - lo - inside

    def responsible(self, target: int, topology: Topology) -> int:
        return self.xor_closest(target) if topology is Topology.KADEMLIA else self.successor(target)

    def replica_set(self, target: int, replicas: int, topology: Topology = Topology.CHORD) -> list[int]:
        """The nodes that should hold a value stored under `target`."""
        if topology is Topology.KADEMLIA:
            return sorted(self.ids, key=lambda i: i ^ target)[:replicas]  # small overlays (lab, tests) only
        i = bisect_left(self.ids, target) % len(self.ids)
        return [self.ids[(i + k) % len(self.ids)] for k in range(min(replicas, len(self.ids)))]

    def judge(self, stat: StatAns, topology: Topology) -> tuple[bool, int]:
        """A node's own account of its routing table (`stat_local()`, or a STAT answer), against
        the live overlay: whether its nearest neighbours are right (ring: successor and
        predecessor; Kademlia: the XOR-nearest contact), and how many of its distinct fingers
        are missing or wrong (Chord; 0 elsewhere). The lab and the simulator both judge so."""
        me = stat.node_id
        if not stat.successors:
            return False, 0
        if topology is Topology.KADEMLIA:
            return stat.successors[0] == self.xor_closest(me, skip=me), 0
        i = bisect_left(self.ids, me)
        neighbours_ok = stat.successors[0] == self.ids[(i + 1) % len(self.ids)] and stat.pred == self.ids[i - 1]
        if topology is not Topology.CHORD:
            return neighbours_ok, 0
        want = {self.successor((me + (1 << k)) % RING) for k in range(ID_BITS)} - {me}
        return neighbours_ok, len(want.symmetric_difference(stat.fingers))

    def ring_errors(self, nodes: list[PeerNode], topology: Topology, *, now_ms: int) -> int:
        """Live nodes whose nearest neighbours are not the oracle's."""
        return sum(not self.judge(node.stat_local(now_ms=now_ms), topology)[0] for node in nodes)

    def finger_errors(self, nodes: list[PeerNode], topology: Topology, *, now_ms: int) -> int:
        """Distinct fingers, over all live nodes, that are missing or point elsewhere than the oracle's
        successor of their start (Chord)."""
        return sum(self.judge(node.stat_local(now_ms=now_ms), topology)[1] for node in nodes)


def hops_formula(n: int) -> float:
    """Mean Chord path length, 1/2 log2 N (Stoica et al., SIGCOMM 2001, fig. 10)."""
    return 0.5 * math.log2(n)
