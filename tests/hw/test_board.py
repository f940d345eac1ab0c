"""Board files: the shipped ones load, and each kind of mistake is one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from peerphone.hw.board import COUNTRIES, BoardError, load

BOARDS = sorted((Path(__file__).parents[2] / "board").glob("*.toml"))
DESK = (Path(__file__).parents[2] / "board" / "pi4-deskphone.toml").read_text()


def test_every_shipped_board_loads():
    assert {p.name for p in BOARDS} >= {"pi4-deskphone.toml", "pi-zero2w-mobile.toml", "fieldkit.toml", "desktop.toml"}
    boards = {p.name: load(p) for p in BOARDS}
    desk = boards["pi4-deskphone.toml"]
    assert desk.keypad is not None and desk.keypad.layout[3] == "*0#" and desk.hook_pin == 17
    assert desk.tones["dial"].freqs_hz == (350, 440) and boards["fieldkit.toml"].gpio == "lgpio"
    assert boards["desktop.toml"].terminal and boards["pi-zero2w-mobile.toml"].ringer_pin is None
    mobile = boards["pi-zero2w-mobile.toml"]
    assert (mobile.battery.source, mobile.battery.address, mobile.role.battery_client_below) == ("ina219", 0x43, 25)
    assert desk.battery.source == "none" and desk.role.min_dwell_ms == 60_000  # mains, the defaults


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("change,line", [
    (("pin = 18", "pin = 40"), "ringer.pin: 40 is not a GPIO pin (BCM 2 to 27)"),
    (("pin = 18", "pin = 17"), "ringer.pin: pin 17 is already hook.pin"),
    (("in_use = 23", "in_yse = 23"), "lamps.in_yse: unknown key (expected one of in_use, message)"),
    (('"*0#"]', '"*0X"]'), "keypad.layout: unknown key 'X'"),
    (('"*0#"]', '"*0"]'), "keypad.layout: expected 4 strings of 3 keys (one per row, column)"),
    (('gpio = "rpigpio"', 'gpio = "wiringpi"'), "board.gpio: 'wiringpi' is not one of rpigpio, lgpio, none"),
    (('country = "us"', 'country = "xx"'), "tones.country: 'xx' is not one of us, uk, de"),
    (("[speed_dial]", '[speed_dial]\n"1" = "bob"'), "speed_dial.1: 'bob' is not a sip: address"),
    (("[directory]", '[directory]\n"1a" = "sip:bob@x"'), "speed_dial: dial code '1a': digits and * only"),
    (("[ringer]", "[ringr]"), "ringr: unknown section"),
    (("earpiece_volume = 80", "earpiece_volume = 180"),
     "audio.earpiece_volume: 180 is not a whole number from 0 to 100"),
    (("[tones]", '[battery]\nsource = "apm"\n[tones]'), "battery.source: 'apm' is not one of none, sysfs, ina219"),
    (("[tones]", "[battery]\ncells = 6\n[tones]"), "battery.cells: 6 is not a whole number from 1 to 4"),
    (("[tones]", "[role]\nbattery_client_below = 60\n[tones]"),
     "role: battery: client below 60% must be under peer above 50% (0 to 100): without a gap the role would flap"),
    (("[tones]", "[role]\nloss_peer_below = 20\n[tones]"), "role: loss: peer below 20% must be under client above 10%"),
    (("[tones]", "[role]\nmin_dwell = 60\n[tones]"), "role.min_dwell: unknown key"),
])
def test_each_mistake_is_one_line_naming_the_file_and_the_key(tmp_path, change, line):
    path = written(tmp_path, DESK.replace(*change))
    with pytest.raises(BoardError) as refused:
        load(path)
    assert len(refused.value.lines) == 1, refused.value.lines
    assert refused.value.lines[0].startswith(f"{path}: {line}")


def test_every_mistake_in_a_file_is_reported_at_once(tmp_path):
    path = written(tmp_path, DESK.replace("pin = 18", "pin = 1").replace("in_use = 23", "in_use = 24"))
    with pytest.raises(BoardError) as refused:
        load(path)
    assert sorted(line.split(": ")[1] for line in refused.value.lines) == ["lamps.message", "ringer.pin"]


def test_a_file_that_is_not_toml_or_not_there(tmp_path):
    with pytest.raises(BoardError, match="not TOML"):
        load(written(tmp_path, "[hook\npin = 1"))
    with pytest.raises(BoardError, match="cannot read"):
        load(tmp_path / "missing.toml")


def test_a_board_may_give_its_own_tones(tmp_path):
    board = load(written(tmp_path, DESK.replace('country = "us"', 'country = "de"\n[tones.busy]\nfreqs_hz = [400]\n'
                                                                  'cadence_ms = [300, 300]')))
    assert board.tones["dial"] == COUNTRIES["de"]["dial"] and board.tones["busy"].cadence_ms == (300, 300)


def test_the_command_checks_board_files_and_exits_2_on_a_mistake(tmp_path):
    bad = written(tmp_path, DESK.replace("pin = 18", "pin = 17"))
    ok = subprocess.run([sys.executable, "-m", "peerphone", "board", *map(str, BOARDS)], capture_output=True, text=True)
    assert ok.returncode == 0 and "Pi 4 deskphone: GPIO rpigpio, hook 17, keypad 4x3 matrix" in ok.stdout
    refused = subprocess.run([sys.executable, "-m", "peerphone", "board", str(bad)], capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr == f"{bad}: ringer.pin: pin 17 is already hook.pin\n"


def test_a_phone_on_a_board_this_machine_cannot_drive_stops_at_once_with_one_line():
    desk = BOARDS[[p.name for p in BOARDS].index("pi4-deskphone.toml")]
    refused = subprocess.run([sys.executable, "-m", "peerphone", "phone", "--board", str(desk), "--aor",
                              "sip:alice@peerphone.local", "--listen", "127.0.0.1:0", "--sip-listen", "127.0.0.1:0"],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and refused.stdout == ""  # before any peer started
    assert refused.stderr.count("\n") == 1 and "needs RPi.GPIO on a Raspberry Pi" in refused.stderr
