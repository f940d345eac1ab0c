"""`pip install .` where no C compiler works (CC=false): it installs, and runs pure."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_install_without_a_compiler_runs_the_pure_twins(tmp_path):
    target = tmp_path / "site"
    env = {**os.environ, "CC": "false", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                            "--target", str(target), str(ROOT)], capture_output=True, text=True, env=env, timeout=300)
    assert build.returncode == 0, build.stderr
    assert not list(target.rglob("_native*.so"))  # nothing was compiled
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PEERPHONE_PURE")}
    run_env["PYTHONPATH"] = str(target)
    doctor = subprocess.run([sys.executable, "-m", "peerphone", "doctor"], capture_output=True, text=True,
                            env=run_env, cwd=tmp_path, timeout=60)
    assert doctor.returncode == 0, doctor.stderr
    assert "native routines: pure Python (the compiled module is not installed)" in doctor.stdout
    sim = subprocess.run([sys.executable, "-m", "peerphone", "sim", "--nodes", "60", "--topology", "kademlia",
                          "--lookups", "50", "--values", "20", "--duration-s", "10", "--seed", "1"],
                         capture_output=True, text=True, env=run_env, cwd=tmp_path, timeout=300)
    assert sim.returncode == 0, sim.stderr
    assert "50/50 found the live responsible node" in sim.stdout
