"""The simulator: determinism, convergence from cold, mass failure, the network model."""

import os
import random
import subprocess
import sys

import pytest
from peerphone.core.overlay import Topology
from peerphone.core.peer import State
from peerphone.core.role import Role
from peerphone.core.usages import Kind
from peerphone.sim.engine import FAILED, ROLE_CHANGED
from peerphone.sim.network import Network, NetworkModel, Partition
from peerphone.sim.scenario import Scenario, SimSpec


def test_one_seed_gives_a_byte_identical_report_across_processes(topology):
    cmd = [sys.executable, "-m", "peerphone", "sim", "--nodes", "120", "--seed", "42", "--lookups", "200",
           "--values", "60", "--duration-s", "60", "--churn-median-s", "300", "--loss", "0.01",
           "--topology", topology.value]
    outputs = []
    for hash_seed in ("1", "2"):  # different string hashing must not change anything
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    other = subprocess.run(cmd[:6] + ["43"] + cmd[7:], capture_output=True, text=True, timeout=300)
    assert other.stdout != outputs[0]  # and the seed does decide


def test_a_cold_ring_built_join_by_join_matches_the_oracle():
    scenario = Scenario(SimSpec(nodes=60, seed=5, values=0, lookups=100, duration_s=30, maintenance_s=2,
                                cold_start=True))
    report = scenario.run()
    assert report.figures["ring_errors after stabilisation"] == 0
    assert report.figures["finger_errors after stabilisation"] == 0
    assert report.figures["stable success"] == 1.0


@pytest.mark.parametrize("topology", [Topology.CHORD, Topology.KADEMLIA])
def test_mass_failure_loses_only_values_whose_replicas_all_failed(topology):
    scenario = Scenario(SimSpec(nodes=300, seed=7, topology=topology, values=600, lookups=300, fail_fraction=0.5,
                                successors=16, maintenance_s=5))
    report = scenario.run()
    assert report.figures["lost beyond replicas"] <= 0
    assert report.figures["ring_errors 12 rounds after 150 failures"] == 0
    assert report.figures["under-replicated 12 rounds after 150 failures"] == 0  # re-replicated to 3
    assert 0 < report.figures["lost"] < 0.5  # some sets did lose all three holders; far fewer than p
    assert report.figures["after failure success"] >= 0.95


def test_stable_lookups_all_find_the_responsible_node():
    report = Scenario(SimSpec(nodes=500, seed=2, values=100, lookups=500, duration_s=30)).run()
    assert report.figures["stable success"] == 1.0
    assert 0.7 < report.figures["stable hops"] / 4.48 < 1.1


def test_network_loss_duplication_and_partition():
    net = Network(NetworkModel(loss=0.2, duplicate=0.1, jitter_ms=10), random.Random(1),
                  [Partition(start_ms=1000, end_ms=2000)])
    for host in range(20):
        net.add_host(host)
    arrivals = [net.deliveries(0, 1, now_ms=0) for _ in range(2000)]
    lost = sum(1 for a in arrivals if not a)
    doubled = sum(1 for a in arrivals if len(a) == 2)
    assert 300 < lost < 500 and 100 < doubled < 250
    assert all(t > 0 for a in arrivals for t in a)
    assert len({tuple(a) for a in arrivals if a}) > 1  # jitter: not every datagram takes the same time
    sides = [(h, net._hosts[h].side % 2) for h in range(20)]
    a = next(h for h, s in sides if s == 0)
    b = next(h for h, s in sides if s == 1)
    clean = Network(NetworkModel(), random.Random(2), [Partition(1000, 2000)])
    clean._hosts = net._hosts
    assert clean.deliveries(a, b, now_ms=1500) == [] and clean.deliveries(a, b, now_ms=2500) != []


def test_one_hop_under_churn_answers_in_one_hop():
    report = Scenario(SimSpec(nodes=200, seed=3, topology=Topology.ONEHOP, values=100, lookups=500, duration_s=900,
                              churn_median_s=1800, maintenance_s=10)).run()
    assert report.figures["under churn one hop"] >= 0.99
    assert report.figures["under churn success"] >= 0.99


def test_kademlia_under_churn_finds_the_closest_live_node():
    report = Scenario(SimSpec(nodes=150, seed=3, topology=Topology.KADEMLIA, values=60, lookups=300, duration_s=600,
                              churn_median_s=600, maintenance_s=10)).run()
    assert report.figures["under churn success"] >= 0.97
    assert report.figures["lookup steps B/s"] > 0  # its lookups are counted apart from maintenance


def test_session_times_have_the_median_asked_for():
    from peerphone.sim.churn import session_ms
    for kind in ("exponential", "weibull"):
        rng = random.Random(9)
        samples = sorted(session_ms(rng, 600_000, kind) for _ in range(20_000))
        assert abs(samples[len(samples) // 2] / 600_000 - 1) < 0.05, kind
    rng_w, rng_e = random.Random(1), random.Random(1)
    weibull = sorted(session_ms(rng_w, 600_000, "weibull", 0.5) for _ in range(20_000))
    exponential = sorted(session_ms(rng_e, 600_000) for _ in range(20_000))
    assert weibull[int(0.99 * len(weibull))] > exponential[int(0.99 * len(exponential))]  # heavier tail


def test_two_rings_left_by_a_partition_merge_after_it_heals():
    report = Scenario(SimSpec(nodes=120, seed=11, values=100, lookups=100, duration_s=120, maintenance_s=5,
                              partition_s=(0, 90))).run()
    assert report.figures["ring_errors 20 rounds after the partition"] == 0
    assert report.figures["finger_errors 20 rounds after the partition"] == 0
    assert report.figures["under-replicated 20 rounds after the partition"] == 0


def test_battery_handsets_follow_the_policy_and_their_role_changes_lose_nothing():
    scenario = Scenario(SimSpec(nodes=200, seed=3, values=200, lookups=300, duration_s=120, battery_share=0.5))
    report = scenario.run()
    fleet = scenario.fleet
    assert fleet is not None and len(fleet.handsets) == 100
    assert fleet.changes[Role.CLIENT] > 0 and fleet.changes[Role.PEER] > 0  # both ways, during the run
    assert report.figures["values found"] == report.figures["stored"] == 200  # handed over, not lost
    assert report.figures["from clients success"] >= 0.99 and report.figures["from peers success"] >= 0.99
    assert report.figures["client datagrams sent a minute"] <= 2.05  # the keepalive every 30 s, and no more
    clients = [scenario.sim.nodes[a] for a in scenario.sim.clients]
    assert clients and all(node.config.client and node.admitting_peer is not None for node in clients)
    assert scenario.sim.oracle().ids == sorted(n.me.node_id for n in scenario.sim.live_nodes())  # clients own nothing


def test_a_request_from_a_node_still_joining_is_a_counted_failure_and_workloads_skip_such_nodes():
    """A node that became a peer a moment ago is live but cannot ask yet: a fetch drawn from it
    once vanished, and a value looked lost after role changes that lost nothing."""
    scenario = Scenario(SimSpec(nodes=20, seed=5))
    scenario.build()
    sim = scenario.sim
    newcomer = sim.join(sim.random_live())
    assert newcomer.state is State.JOINING
    outcomes = []
    sim.request(newcomer, lambda node, now: node.fetch(1, Kind.BLOB, now_ms=now), outcomes.append)
    assert len(outcomes) == 1 and outcomes[0].error is not None and outcomes[0].responder is None
    drawn = {id(sim.random_joined()) for _ in range(400)}
    assert id(newcomer) not in drawn and len(drawn) == 20


def test_a_request_whose_requester_stops_before_its_answer_ends_with_the_reason():
    """As UdpDriver fails what it waits for when its node changes role: a fetch made by a handset
    that became a client before its answer came once never ended, and a value looked slow to find."""
    scenario = Scenario(SimSpec(nodes=20, seed=5))
    scenario.build()
    sim = scenario.sim
    changing, failing, staying = (sim.nodes[a] for a in sim.live[:3])
    outcomes: dict[str, list] = {"changing": [], "failing": [], "staying": []}
    for name, node in (("changing", changing), ("failing", failing), ("staying", staying)):
        sim.request(node, lambda node, now: node.fetch(1, Kind.BLOB, now_ms=now), outcomes[name].append)
    bootstrap = [staying.me.addr]
    sim.become(changing.me.addr, client=True, bootstrap=bootstrap)
    sim.fail(failing.me.addr)
    assert [o.error.reason for o in outcomes["changing"]] == [ROLE_CHANGED]
    assert [o.error.reason for o in outcomes["failing"]] == [FAILED]
    assert outcomes["staying"] == []  # still on its way
    sim.run_until(sim.now_ms + 5_000)
    assert len(outcomes["changing"]) == len(outcomes["failing"]) == 1  # and no second end from the old node
    assert len(outcomes["staying"]) == 1 and outcomes["staying"][0].error is None


def test_calls_go_through_while_handsets_change_roles_between_fronts_on_peers_and_on_clients():
    """A phone may sit behind a handset that is a client, at either end of a call: its front is
    then reached through the handset's admitting peer, and answers it too."""
    scenario = Scenario(SimSpec(nodes=120, seed=3, values=100, calls=120, phones=60, duration_s=120,
                                battery_share=0.5))
    report = scenario.run()
    fleet = scenario.fleet
    assert fleet is not None and fleet.changes[Role.CLIENT] + fleet.changes[Role.PEER] > 0
    world = scenario.world
    assert world is not None
    on_clients = [f for f in world.fronts.values() if f.node.config.client]
    assert on_clients and any(f.front.counters["sip tunnelled in"] for f in on_clients)
    assert report.figures["role changes calls set up"] == 1.0
    assert report.figures["role changes calls ended"] == 120  # every BYE answered 200, however long its path
    assert report.figures["values found"] == report.figures["stored"] == 100
