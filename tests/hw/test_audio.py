"""The mixer levels of a board, set through pyalsaaudio on a real ALSA control device: the pulse
plugin's, whose Master and Capture controls are a PulseAudio sink's and source's volumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from peerphone.hw.audio import mixer_of

from tests.hw import pulse
from tests.hw.pulse import PulseServer

BOARD = """
[board]
name = "levels"

[audio]
earpiece = "plughw:CARD=Device,DEV=0"
microphone = "plughw:CARD=Device,DEV=0"
{levels}
"""


@pytest.fixture
def server() -> Iterator[PulseServer]:
    if not pulse.available():
        pytest.skip("needs PulseAudio (tools/setup --test installs it)")
    pytest.importorskip("alsaaudio", reason="pyalsaaudio is installed by tools/setup --test")
    server = PulseServer(("handset",), 16_000)
    server.use_alsa_config("ctl.handset { type pulse }\n")
    server.pactl("set-default-source", "handset.monitor")
    try:
        yield server
    finally:
        server.close()


def set_levels(server: PulseServer, tmp_path: Path, levels: str) -> list[str]:
    """The board's levels set as the phone sets them, in a process that sees the test's ALSA."""
    board = tmp_path / "levels.toml"
    board.write_text(BOARD.format(levels=levels))
    code = ("import json, sys; from pathlib import Path; from peerphone.hw.board import load; "
            "from peerphone.hw.audio import set_levels; print(json.dumps(set_levels(load(Path(sys.argv[1])))))")
    done = subprocess.run([sys.executable, "-c", code, str(board)], env={**os.environ, **server.env},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines: list[str] = json.loads(done.stdout)
    return lines


def percent(pactl_output: str) -> int:
    return int(pactl_output.split("/")[1].strip().rstrip("%"))


def test_the_board_s_volume_and_gain_are_set_on_the_card(server: PulseServer, tmp_path: Path):
    lines = set_levels(server, tmp_path, 'mixer = "handset"\nearpiece_volume = 40\nmicrophone_gain = 70')
    assert lines == ["earpiece volume 40% on 'handset' Master", "microphone gain 70% on 'handset' Capture"]
    assert percent(server.pactl("get-sink-volume", "handset")) == 40
    assert percent(server.pactl("get-source-volume", "handset.monitor")) == 70


def test_a_card_without_a_mixer_is_skipped_with_a_line_and_the_phone_goes_on(server: PulseServer, tmp_path: Path):
    lines = set_levels(server, tmp_path, 'earpiece_volume = 40')  # hw:CARD=Device: no such card here
    assert len(lines) == 1 and lines[0].startswith("mixer levels skipped: no mixer 'hw:CARD=Device' (")
    assert set_levels(server, tmp_path, "") == []  # no levels asked: nothing touched
    assert percent(server.pactl("get-sink-volume", "handset")) == 100


@pytest.mark.parametrize("pcm,mixer", [("plughw:CARD=Device,DEV=0", "hw:CARD=Device"), ("hw:1,0", "hw:CARD=1"),
                                       ("default", "default"), ("alice_earpiece", "default")])
def test_a_pcm_s_mixer_is_its_card_s(pcm, mixer):
    assert mixer_of(pcm) == mixer
