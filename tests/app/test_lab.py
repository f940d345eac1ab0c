"""`peerphone lab` end to end: real peer processes, a kill, repair, and every process stopped."""

import re

from tests.procs import peerphone


def test_lab_with_kill_fetches_everything_after_repair(topology):
    result = peerphone("lab", "--peers", "8", "--ops", "80", "--kill", "0.25", "--seed", "4",
                       "--topology", topology.value, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "every operation succeeded" in out
    for phase in ("store", "fetch", "fetch after kill"):
        line = next(row for row in out.splitlines() if row.startswith(phase + " "))
        assert re.search(r"\b80/80\s+100\.00%", line), line
        assert "hops p50" in line and "latency p50" in line
    assert "RSS per peer" in out and "killed 2 peers" in out
