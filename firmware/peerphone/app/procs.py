"""Child processes of ours: how to start a `peerphone` that runs this very package, and how to stop one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import peerphone


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 5.0, *, close: bool = True) -> None:
    """SIGTERM (a child of ours stops gracefully on it), SIGKILL after `grace_s`; then close its pipes
    (not with close=False: threads still reading them can finish first)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr) if close else ():
        if stream is not None:
            stream.close()


def peerphone_command(*args: str) -> list[str]:
    """The command line of a child `peerphone` running this very package, installed or not."""
    return [sys.executable, "-m", "peerphone", *args]


def child_env() -> dict[str, str]:
    source_root = str(Path(peerphone.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))}
