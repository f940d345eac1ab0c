"""Calls in the simulator: the real SIP front on every peer, phones that register, call, move."""

import os
import subprocess
import sys

from peerphone.sim.calls import CallOutcome
from peerphone.sim.scenario import Scenario, SimSpec


def test_a_call_report_is_byte_identical_across_processes_for_one_seed(topology):
    cmd = [sys.executable, "-m", "peerphone", "sim", "--nodes", "100", "--seed", "42", "--calls", "60",
           "--phones", "20", "--values", "20", "--duration-s", "60", "--churn-median-s", "300", "--loss", "0.01",
           "--topology", topology.value]
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] and "calls: " in outputs[0]
    other = subprocess.run(cmd[:6] + ["43"] + cmd[7:], capture_output=True, text=True, timeout=300)
    assert other.stdout != outputs[0]


def test_on_a_stable_overlay_every_call_rings_and_is_hung_up(topology):
    report = Scenario(SimSpec(nodes=150, seed=4, topology=topology, values=10, calls=80, phones=40,
                              duration_s=60, maintenance_s=10)).run()
    assert report.figures["phones registered"] == 40
    assert report.figures["stable calls set up"] == 1.0
    assert report.figures["stable calls ended"] == 80
    assert 0 < report.figures["stable call setup p50"] < 5000


def test_a_phone_whose_front_dies_moves_to_another_and_can_be_called_again():
    scenario = Scenario(SimSpec(nodes=60, seed=8, values=0, phones=6, maintenance_s=5))
    scenario.build()
    scenario.start_phones()
    sim, world = scenario.sim, scenario.world
    assert world is not None
    phones = [world.phones[a] for a in sorted(world.phones)]
    callee, caller = phones[0], phones[1]
    first_front = callee.front
    assert first_front is not None and callee.registered
    dead = next(a for a in sim.live if a[0] == first_front[0])
    sim.fail(dead)
    sim.run_until(sim.now_ms + 30_000)  # a keepalive finds the front silent; the phone registers elsewhere
    assert callee.moves == 1 and callee.front != first_front and callee.registered
    outcome = CallOutcome(sim.now_ms)
    caller.call(callee.aor, outcome)
    sim.run_until(sim.now_ms + 10_000)
    assert outcome.failure is None and outcome.ringing_ms is not None
