"""Experiments on the simulator: stable lookups, mass failure, churn; and their report.

A report holds only what the seed decides (no wall-clock time), so two runs with
one seed print the same bytes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from ..core.events import RequestCompleted
from ..core.ids import id_from_name
from ..core.limits import REPLICAS, Timing
from ..core.overlay import Topology
from ..core.peer import PeerNode
from ..core.role import Role
from ..core.stats import percentile
from ..core.usages import MODEL_OF, Kind
from ..core.wire.messages import Addr, Entry, FetchAns
from .calls import CALL_GIVE_UP_MS, HOLD_MS, CallOutcome, CallWorld
from .churn import session_ms
from .engine import REQUESTER_STOPPED, Simulation, hops_formula
from .network import NetworkModel, Partition
from .roles import LEAVE_WAIT_MS, BatteryFleet

ROLE_SETTLE_MS = 120_000  # the first clients attach and the handsets' first checks run
IDLE_WINDOW_MS = 5 * 60_000

MAINTENANCE_CODES = ("PING", "UPDATE", "FIND", "JOIN", "LEAVE", "ANNOUNCE", "MEMBERS")
REPLICATION_CODES = ("STORE",)
# Kademlia's lookup steps: the lookups measured, and its bucket refreshes, republishing and joins.
LOOKUP_STEP_CODES = ("CLOSEST",)
VALUE_LIFETIME_S = 24 * 3600


@dataclass(frozen=True)
class SimSpec:
    nodes: int
    seed: int = 1
    topology: Topology = Topology.CHORD
    duration_s: int = 300
    churn_median_s: float | None = None
    session: str = "exponential"  # or "weibull"
    weibull_shape: float = 0.7
    fail_fraction: float = 0.0
    values: int = 1000
    lookups: int = 2000
    maintenance_s: float = 30.0
    successors: int = 8
    loss: float = 0.0
    cold_start: bool = False
    partition_s: tuple[int, int] | None = None  # (start, duration) within the measured period
    calls: int = 0  # > 0: calls between phones are measured instead of lookups
    phones: int = 1000
    battery_share: float = 0.0  # this share of the nodes are battery handsets that follow the role policy

    def timing(self) -> Timing:
        # Internet round trips reach a few hundred ms in the network model: wait a second
        # for a hop ack or an answer before calling it lost.
        return Timing(rpc_retransmit_first_ms=1000, hop_ack_timeout_ms=1000, fingers_fixed_per_round=2,
                      fingers_probed_per_round=2).scaled(int(self.maintenance_s * 1000))


@dataclass
class Lookups:
    issued: int = 0
    answered: int = 0
    correct: int = 0
    hops: list[int] = field(default_factory=list)
    latency_ms: list[int] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)


@dataclass
class Report:
    spec: SimSpec
    lines: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, value: float, text: str) -> None:
        self.figures[key] = value
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class Scenario:
    def __init__(self, spec: SimSpec, progress: Callable[[str], None] = lambda _: None) -> None:
        self.spec = spec
        self.progress = progress
        model = NetworkModel(loss=spec.loss)
        self.sim = Simulation(spec.seed, spec.timing(), model, successors_kept=spec.successors,
                              topology=spec.topology)
        self.report = Report(spec)
        self.keys: list[str] = []
        self.stored: set[str] = set()
        self.world: CallWorld | None = None  # the phones and fronts, when calls are measured
        self.fleet: BatteryFleet | None = None  # the battery handsets, when roles are measured

    # -- phases --

    def build(self) -> None:
        spec, sim = self.spec, self.sim
        if spec.battery_share:
            self.fleet = BatteryFleet(sim)
            self.fleet.build(spec.nodes, int(spec.nodes * spec.battery_share))
            sim.run_until(sim.now_ms + 5000)  # the clients attach
        elif spec.cold_start:
            first = sim.join(None)
            for i in range(1, spec.nodes):
                sim.run_until(sim.now_ms + 200)
                sim.join(sim.random_live() if i > 1 else first)
            sim.run_until(sim.now_ms + int(spec.maintenance_s * 1000 * 20))
        else:
            sim.warm_start(spec.nodes)

    def store_values(self) -> None:
        spec, sim = self.spec, self.sim
        self.keys = [f"sim-{spec.seed}-{i}" for i in range(spec.values)]
        stamp = 1
        for i, key in enumerate(self.keys):
            def start(node: PeerNode, now: int, key: str = key) -> int:
                entry = Entry(None, key.encode(), stamp, VALUE_LIFETIME_S)
                return node.store(id_from_name(key), Kind.BLOB, MODEL_OF[Kind.BLOB], [entry], now_ms=now)

            def done(event: RequestCompleted, key: str = key) -> None:
                if event.error is None:
                    self.stored.add(key)

            sim.call_at(sim.now_ms + i * 10, self._requester(start, done))
        sim.run_until(sim.now_ms + len(self.keys) * 10 + 20_000)

    def _advance(self, ms: int) -> None:
        """Run the simulation `ms` further, with a progress line each simulated minute."""
        sim, end = self.sim, self.sim.now_ms + ms
        while sim.now_ms < end:
            sim.run_until(min(end, sim.now_ms + 60_000))
            self.progress(f"simulated {sim.now_ms / 1000:,.0f} s, {sim.events_run:,} events, "
                          f"{len(sim.live):,} live nodes")

    def _requester(self, start: Callable[[PeerNode, int], int],
                   done: Callable[[RequestCompleted], None]) -> Callable[[], None]:
        """A deferred request from whichever node is a random joined one when it runs."""
        return lambda: self.sim.request(self.sim.random_joined(), start, done)

    def lookups(self, count: int, spread_ms: int, from_clients: bool = False) -> Lookups:
        """`count` fetches of random ids from random live peers (or attached clients), judged by who
        answered."""
        sim, result = self.sim, Lookups()
        for i in range(count):
            sim.call_at(sim.now_ms + (i * spread_ms) // max(1, count), lambda: self._one_lookup(result, from_clients))
        self._advance(spread_ms + 30_000)
        return result

    def _one_lookup(self, result: Lookups, from_client: bool = False) -> None:
        sim = self.sim
        if from_client and not sim.clients:
            return
        origin = sim.nodes[sim.clients[sim.rng.randrange(len(sim.clients))]] if from_client else sim.random_joined()
        target = sim.rng.getrandbits(160)
        started = sim.now_ms
        result.issued += 1

        def done(event: RequestCompleted) -> None:
            if event.error is not None or event.responder is None:
                reason = event.error.reason if event.error is not None else "no responder"
                result.failures[reason] = result.failures.get(reason, 0) + 1
                return
            result.answered += 1
            result.hops.append(event.hops)
            result.latency_ms.append(sim.now_ms - started)
            if event.responder == sim.oracle().responsible(target, sim.topology):
                result.correct += 1

        sim.request(origin, lambda n, now: n.fetch(target, Kind.BLOB, now_ms=now), done)

    def start_phones(self) -> None:
        """A front on every node (peers and attached clients), and phones registering at random
        fronts over a minute."""
        spec, sim = self.spec, self.sim
        world = self.world = CallWorld(sim)
        for addr in (*sim.live, *sim.clients):
            world.add_front(sim.nodes[addr])
        for i in range(spec.phones):
            sim.call_at(sim.now_ms + i * 60_000 // max(1, spec.phones), partial(world.add_phone, i))
        self._advance(90_000)
        registered = sum(p.registered for p in world.phones.values())
        self.report.add("phones registered", registered, f"phones registered: {registered}/{spec.phones}, "
                        f"two contacts each, through two random peers' SIP fronts")

    def calls(self, count: int, spread_ms: int) -> list[CallOutcome]:
        """`count` calls between random phones, by AOR, spread over `spread_ms`."""
        sim, world = self.sim, self.world
        assert world is not None
        phones = [world.phones[a] for a in sorted(world.phones)]
        outcomes: list[CallOutcome] = []

        def place() -> None:
            caller, callee = sim.rng.sample(phones, 2)
            outcome = CallOutcome(sim.now_ms)
            outcomes.append(outcome)
            caller.call(callee.aor, outcome)

        for i in range(count):
            sim.call_at(sim.now_ms + (i * spread_ms) // max(1, count), place)
        self._advance(spread_ms + CALL_GIVE_UP_MS + HOLD_MS + 30_000)
        return outcomes

    def _call_figures(self, name: str, outcomes: list[CallOutcome]) -> None:
        r, world = self.report, self.world
        assert world is not None
        delays = [o.ringing_ms for o in outcomes if o.ringing_ms is not None]
        share = len(delays) / len(outcomes) if outcomes else 0.0
        failures: dict[str, int] = {}
        for o in outcomes:
            if o.ringing_ms is None:
                why = o.failure or "still waiting"
                failures[why] = failures.get(why, 0) + 1
        r.add(f"{name} calls set up", share, f"{name} calls: {len(delays)}/{len(outcomes)} reached the callee's "
              f"phone (180 Ringing): {share:.2%}" + "".join(f"; {n} {why}" for why, n in sorted(failures.items())))
        r.add(f"{name} call setup p50", percentile(delays, 50), f"{name} call setup (INVITE to 180): p50 "
              f"{percentile(delays, 50):.0f} ms, p95 {percentile(delays, 95):.0f} ms, "
              f"p99 {percentile(delays, 99):.0f} ms (simulated)")
        lookups: dict[str, int] = {}
        for front in world.fronts.values():
            for why, n in front.front.counters.items():
                if why.startswith("sip lookup failed"):
                    lookups[why] = lookups.get(why, 0) + n
        if lookups:
            r.lines.append(f"{name}: registration lookups that failed at the caller's front (each tried twice): "
                           + "; ".join(f"{n} {why[len('sip lookup failed: '):]}" for why, n in sorted(lookups.items())))
        ended = sum(o.ended for o in outcomes)
        moves = sum(p.moves for p in world.phones.values())
        r.add(f"{name} calls ended", ended, f"{name} calls hung up with a 200 to the BYE: {ended}; "
              f"phones that moved to another front: {moves} times")

    def fetch_all(self) -> tuple[int, int]:
        """(found, missing) over every value that was stored. A fetch whose requester stopped
        (it changed its role, or failed) or that had no end 30 s after the last one began is made
        again from another node, as a phone would, and counted in the report: the figure is about
        the values."""
        sim = self.sim
        found: set[str] = set()
        answered: set[str] = set()
        stopped: set[str] = set()
        unanswered = sorted(self.stored)
        for _ in range(2):
            for i, key in enumerate(unanswered):
                def done(event: RequestCompleted, key: str = key) -> None:
                    if event.error is not None and event.error.reason in REQUESTER_STOPPED:
                        stopped.add(key)  # asked again, from a node that runs
                        return
                    answered.add(key)
                    if isinstance(event.answer, FetchAns) and event.answer.entries:
                        found.add(key)

                def start(node: PeerNode, now: int, key: str = key) -> int:
                    return node.fetch(id_from_name(key), Kind.BLOB, now_ms=now)

                sim.call_at(sim.now_ms + i * 5, self._requester(start, done))
            sim.run_until(sim.now_ms + len(unanswered) * 5 + 30_000)
            unanswered = [key for key in unanswered if key not in answered]
            if not unanswered:
                break
            lost = sum(key not in stopped for key in unanswered)
            self.report.lines.append(f"fetches of stored values made again: {len(unanswered) - lost} whose requester "
                                     f"stopped (changed role or failed), {lost} with no end within 30 s")
            stopped.clear()
        return len(found), len(self.stored) - len(found)

    def traffic(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for node in self.sim.nodes.values():
            for name, value in node.counters.items():
                if name.startswith("bytes.") or name.startswith("sent."):
                    totals[name] = totals.get(name, 0) + value
        return totals

    # -- the experiments --

    def run(self) -> Report:
        spec, r = self.spec, self.report
        r.lines.append(f"peerphone sim: {spec.nodes} nodes, topology {spec.topology.value}, seed {spec.seed}, "
                       f"maintenance every {spec.maintenance_s:g} s, {spec.successors} successors, "
                       f"loss {spec.loss:.1%}, {'cold' if spec.cold_start else 'warm'} start")
        self.progress(f"building {spec.nodes} nodes")
        self.build()
        self._invariants("after stabilisation")
        self.progress(f"storing {spec.values} values")
        self.store_values()
        r.add("stored", len(self.stored), f"values stored: {len(self.stored)}/{spec.values}")
        if spec.partition_s is not None:
            start_s, duration_s = spec.partition_s
            begin_ms = self.sim.now_ms + start_s * 1000
            self.sim.network.partitions.append(Partition(begin_ms, begin_ms + duration_s * 1000))
            r.lines.append(f"partition into two halves from {start_s} s for {duration_s} s")
        if spec.fail_fraction > 0:
            self._mass_failure()
        elif spec.churn_median_s:
            self._churn()
        elif spec.battery_share:
            self._roles()
        elif spec.calls:
            self.progress(f"{spec.phones} phones register")
            self.start_phones()
            self.progress(f"{spec.calls} calls")
            self._call_figures("stable", self.calls(spec.calls, spec.duration_s * 1000))
        else:
            self.progress(f"{spec.lookups} lookups")
            self._lookup_figures("stable", self.lookups(spec.lookups, spec.duration_s * 1000))
        if spec.partition_s is not None:
            self._advance(int(spec.maintenance_s * 1000 * 20))
            self._invariants("20 rounds after the partition")
        self._load_balance()
        r.add("events", self.sim.events_run, f"events simulated: {self.sim.events_run}, datagrams sent: "
              f"{self.sim.datagrams}, dropped by the network: {self.sim.network.dropped}")
        return r

    def _invariants(self, when: str) -> None:
        live = self.sim.live_nodes()
        oracle = self.sim.oracle()
        topology = self.spec.topology
        now_ms = self.sim.now_ms
        ring, fingers = (oracle.ring_errors(live, topology, now_ms=now_ms),
                         oracle.finger_errors(live, topology, now_ms=now_ms))
        finger_text = f", {fingers} distinct fingers missing or wrong" if topology is Topology.CHORD else ""
        wrong = "nearest contact" if topology is Topology.KADEMLIA else "successor or predecessor"
        self.report.add(f"ring_errors {when}", ring, f"{when}: {ring} nodes with a wrong {wrong}{finger_text}")
        self.report.figures[f"finger_errors {when}"] = fingers
        if self.stored:
            holders: dict[int, int] = {}
            for node in live:
                for resource, _ in node.storage.keys():
                    holders[resource] = holders.get(resource, 0) + 1
            counts = [holders.get(id_from_name(key), 0) for key in sorted(self.stored)]
            short = sum(1 for c in counts if 0 < c < REPLICAS)
            self.report.add(f"under-replicated {when}", short, f"{when}: {short} values on fewer than {REPLICAS} "
                            f"live nodes, {counts.count(0)} on none")

    def _lookup_figures(self, name: str, result: Lookups) -> None:
        r, n = self.report, len(self.sim.live)
        success = result.correct / result.issued if result.issued else 0.0
        abandoned = result.issued - result.answered - sum(result.failures.values())
        mean_hops = statistics.fmean(result.hops) if result.hops else 0.0
        formula = hops_formula(n)
        r.add(f"{name} success", success, f"{name} lookups: {result.correct}/{result.issued} found the live "
              f"responsible node ({success:.2%}); {result.answered} answered"
              + "".join(f"; {count} {why}" for why, count in sorted(result.failures.items()))
              + f"; {abandoned} lost with their failed origin")
        paper = ""
        if self.spec.topology is Topology.CHORD:
            paper = f"; 1/2 log2 N = {formula:.2f} (ratio {mean_hops / formula:.3f})"
        r.add(f"{name} hops", mean_hops, f"{name} hops: mean {mean_hops:.2f} p50 {percentile(result.hops, 50):.0f} "
              f"p99 {percentile(result.hops, 99):.0f}{paper}")
        if self.spec.topology is Topology.ONEHOP:
            one_hop = sum(1 for h in result.hops if h <= 1) / len(result.hops) if result.hops else 0.0
            r.add(f"{name} one hop", one_hop, f"{name} lookups answered in one hop: {one_hop:.2%}")
        r.add(f"{name} latency", percentile(result.latency_ms, 50),
              f"{name} latency: p50 {percentile(result.latency_ms, 50):.0f} ms "
              f"p99 {percentile(result.latency_ms, 99):.0f} ms")

    def _roles(self) -> None:
        """Battery handsets follow the role policy for the measured period, with lookups from peers
        and from clients; then an idle window counts datagrams, and every value is fetched."""
        spec, sim, r, fleet = self.spec, self.sim, self.report, self.fleet
        assert fleet is not None
        handsets = len(fleet.handsets)
        self.progress(f"{handsets} battery handsets, {fleet.clients()} of them clients")
        self._advance(ROLE_SETTLE_MS)
        if spec.calls:
            self.progress(f"{spec.phones} phones register at the peers' and the handsets' fronts")
            self.start_phones()
            self.progress(f"{spec.calls} calls while the handsets change roles")
            self._call_figures("role changes", self.calls(spec.calls, spec.duration_s * 1000))
            tunnelled = sum(f.front.counters["sip tunnelled in"] for f in self.world.fronts.values()) \
                if self.world else 0
            r.add("tunnelled in", tunnelled, f"SIP messages that reached a client's front through its admitting "
                  f"peer (Tunnel): {tunnelled}")
        else:
            half = spec.lookups // 2
            self._lookup_figures("from peers", self.lookups(half, spec.duration_s * 500))
            self._lookup_figures("from clients", self.lookups(spec.lookups - half, spec.duration_s * 500,
                                                              from_clients=True))
        before = {a: (sim.nodes[a], _datagrams(sim.nodes[a])) for a in (*sim.live, *sim.clients)}
        self._advance(IDLE_WINDOW_MS)
        minutes = IDLE_WINDOW_MS / 60_000
        sent: dict[bool, list[float]] = {True: [], False: []}  # client? -> datagrams sent a minute
        received: dict[bool, list[float]] = {True: [], False: []}
        for addr, (node, (sent_before, received_before)) in before.items():
            if sim.nodes[addr] is node and (sim.is_live(addr) or addr in sim.clients):
                sent_now, received_now = _datagrams(node)
                sent[node.config.client].append((sent_now - sent_before) / minutes)
                received[node.config.client].append((received_now - received_before) / minutes)
        peers = len(sent[False])
        to_clients = (sum(sent[True]) + sum(received[True])) / peers if peers else 0.0
        r.add("clients now", fleet.clients(), f"battery handsets: {handsets} of {spec.nodes} nodes; clients "
              f"now {fleet.clients()}; since the start, changes into client {fleet.changes[Role.CLIENT]}, into peer "
              f"{fleet.changes[Role.PEER]}; leaves not finished within {LEAVE_WAIT_MS // 1000} s "
              f"{fleet.unfinished_handovers}")
        r.add("client datagrams sent a minute", statistics.fmean(sent[True]) if sent[True] else 0.0,
              f"idle {IDLE_WINDOW_MS // 60_000} min, datagrams a minute: a client sends {_spread(sent[True])} and "
              f"receives {_spread(received[True])}; a peer sends {_spread(sent[False])} and receives "
              f"{_spread(received[False])}, of which {to_clients:.1f} to and from its attached clients")
        found, missing = self.fetch_all()
        r.add("values found", found, f"values found after the role changes: {found}/{found + missing}")

    def _mass_failure(self) -> None:
        spec, sim, r = self.spec, self.sim, self.report
        victims = sim.rng.sample(sorted(sim.live), round(spec.fail_fraction * len(sim.live)))
        doomed = set(victims)
        held = {resource for a in sim.live if a not in doomed for resource, _ in sim.nodes[a].storage.keys()}
        survivors_hold = {key for key in self.stored if id_from_name(key) in held}
        self.progress(f"failing {len(victims)} nodes at once")
        for addr in victims:
            sim.fail(addr)
        rounds = 12
        self._advance(int(spec.maintenance_s * 1000 * rounds))
        self._invariants(f"{rounds} rounds after {len(victims)} failures")
        self.progress("lookups after the failure")
        self._lookup_figures("after failure", self.lookups(spec.lookups, 60_000))
        found, missing = self.fetch_all()
        lost_fraction = missing / max(1, len(self.stored))
        allowed = len(self.stored) - len(survivors_hold)
        p = spec.fail_fraction
        r.add("lost", lost_fraction, f"values lost: {missing}/{len(self.stored)} ({lost_fraction:.2%}); "
              f"p^{REPLICAS} = {p ** REPLICAS:.2%}, unreplicated p = {p:.0%}")
        r.add("lost beyond replicas", missing - allowed, f"values lost although a replica survived: "
              f"{max(0, missing - allowed)} (values whose {REPLICAS} holders all failed: {allowed})")

    def _churn(self) -> None:
        spec, sim, r = self.spec, self.sim, self.report
        assert spec.churn_median_s is not None
        median_ms = spec.churn_median_s * 1000

        def schedule_death(addr: Addr) -> None:
            sim.call_at(sim.now_ms + session_ms(sim.rng, median_ms, spec.session, spec.weibull_shape),
                        lambda: die(addr))

        def die(addr: Addr) -> None:
            if not sim.is_live(addr) or len(sim.live) <= 3:
                return
            sim.fail(addr)
            newcomer = sim.join(sim.random_live())
            if self.world is not None:
                self.world.add_front(newcomer)
            schedule_death(newcomer.me.addr)

        if spec.calls:
            self.progress(f"{spec.phones} phones register")
            self.start_phones()
        for addr in sorted(sim.live):
            schedule_death(addr)
        before = self.traffic()
        start_ms = sim.now_ms
        self.progress(f"churn for {spec.duration_s} s, median session {spec.churn_median_s:g} s")
        if spec.calls:
            self._call_figures("under churn", self.calls(spec.calls, spec.duration_s * 1000))
        else:
            self._lookup_figures("under churn", self.lookups(spec.lookups, spec.duration_s * 1000))
        window_s = (sim.now_ms - start_ms) / 1000
        after = self.traffic()
        self._invariants("at the end of churn")
        kinds = [("maintenance", MAINTENANCE_CODES), ("replication", REPLICATION_CODES)]
        if sim.topology is Topology.KADEMLIA:
            kinds.append(("lookup steps", LOOKUP_STEP_CODES))
        for name, codes in kinds:
            sent = sum(after.get(f"sent.{c}{s}", 0) - before.get(f"sent.{c}{s}", 0)
                       for c in codes for s in ("", "_ANS"))
            size = sum(after.get(f"bytes.{c}{s}", 0) - before.get(f"bytes.{c}{s}", 0)
                       for c in codes for s in ("", "_ANS"))
            per_node = len(sim.live) * window_s
            r.add(f"{name} B/s", size / per_node, f"{name}: {sent / per_node:.2f} messages and "
                  f"{size / per_node:.0f} bytes per node per second")

    def _load_balance(self) -> None:
        counts = [len(n.storage) for n in self.sim.live_nodes()]
        mean = statistics.fmean(counts) if counts else 0.0
        if mean:
            self.report.add("values max/mean", max(counts) / mean, f"values per node: mean {mean:.2f}, max/mean "
                            f"{max(counts) / mean:.2f}, p99/mean {percentile(counts, 99) / mean:.2f}")


def _datagrams(node: PeerNode) -> tuple[int, int]:
    """(sent, received) by `node`, in datagrams."""
    return sum(v for k, v in node.counters.items() if k.startswith("sent.")), node.counters["received"]


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    return f"mean {statistics.fmean(values):.1f} (p50 {percentile(values, 50):.1f}, p95 {percentile(values, 95):.1f})"
