import os
import sys
from pathlib import Path

# Tests run from a checkout without installing: the package lives in firmware/.
FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
sys.path.insert(0, str(FIRMWARE))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FIRMWARE), os.environ.get("PYTHONPATH")]))

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from peerphone.core.overlay import Topology  # noqa: E402

# Shared CI machines are noisy: no per-example deadline, no "too slow" verdicts.
settings.register_profile("peerphone", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("peerphone")


@pytest.fixture(params=list(Topology), ids=lambda t: t.value)
def topology(request: pytest.FixtureRequest) -> Topology:
    """The conformance suites run once per topology."""
    return request.param
