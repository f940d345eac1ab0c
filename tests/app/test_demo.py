"""The README's demo: peers, two phones, a tone through a real call."""

import re

import pytest

from tests.procs import peerphone

pytest.importorskip("pjsua2", reason="pjsua2-python is installed by tools/setup on x86_64")


@pytest.mark.sip
def test_the_demo_call_carries_the_tone(topology):
    result = peerphone("demo", "--peers", "5", "--seconds", "2", "--topology", topology.value, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"strongest frequency ([\d.]+) Hz", result.stdout)
    assert found and abs(float(found.group(1)) - 1000) <= 20, result.stdout
    assert re.search(r"call setup: INVITE to 180 Ringing [\d.]+ ms", result.stdout)
    assert "pjlib" not in result.stdout + result.stderr  # pjsua2's start-up chatter stays out
