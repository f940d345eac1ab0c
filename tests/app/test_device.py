"""`peerphone device`: the flashed image's service, set up by one peerphone.toml a person edits.
A mistake is one line naming the key, and exit status 2 (the unit does not restart on it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from peerphone.app.config import ConfigError
from peerphone.app.device import load

from tests.procs import LineProc, peerphone, start_peer, stop

GOOD = 'aor = "sip:pi@peerphone.local"\nbootstrap = ["127.0.0.1:6084"]\n'


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "peerphone.toml"
    path.write_text(text)
    return path


def test_a_file_with_the_aor_alone_is_a_phone_that_starts_an_overlay_on_the_default_ports(tmp_path: Path):
    args = load(written(tmp_path, 'aor = "sip:pi@peerphone.local"\n'))
    assert (args.aor, args.bootstrap, args.overlay) == ("sip:pi@peerphone.local", [], "peerphone.local")
    assert (args.listen, args.sip_listen, args.rtp_port, args.board) == ("0.0.0.0:6084", "0.0.0.0:5060", None, None)


def test_every_setting_is_taken(tmp_path: Path):
    board = tmp_path / "mine.toml"
    board.write_text('[board]\nname = "mine"\n')
    args = load(written(tmp_path, GOOD + 'overlay = "site7"\nadvertise = "10.0.2.2"\nport = 16084\n'
                                         'sip_port = 15060\nrtp_port = 14000\ntopology = "kademlia"\n'
                                         'board = "mine.toml"\n'))
    assert (args.overlay, args.advertise, args.topology) == ("site7", "10.0.2.2", "kademlia")
    assert (args.listen, args.sip_listen, args.rtp_port) == ("0.0.0.0:16084", "0.0.0.0:15060", 14000)
    assert args.board == board


@pytest.mark.parametrize("text, says", [
    ("", "aor: missing"),
    ('aor = "pi@peerphone.local"\n', "aor: the address 'pi@peerphone.local' is not a sip: URI"),
    ('aor = "sip:peerphone.local"\n', "aor: the address 'sip:peerphone.local' has no user part"),
    ('aor = 7\n', "aor: expected a string in quotes"),
    ('aor = "sip:pi@x"\nbootstrap = "10.0.0.1:6084"\n', "bootstrap: expected a list"),
    ('aor = "sip:pi@x"\nbootstrap = ["10.0.0.1:http"]\n', "bootstrap: '10.0.0.1:http': port must be a number"),
    ('aor = "sip:pi@x"\nport = 70000\n', "port: expected a port number"),
    ('aor = "sip:pi@x"\nsip_port = true\n', "sip_port: expected a port number"),
    ('aor = "sip:pi@x"\nrtp_port = 65530\n', "rtp_port: 20 ports from 65530 go past 65535"),
    ('aor = "sip:pi@x"\ntopology = "ring"\n', "topology: one of chord, onehop, kademlia, not 'ring'"),
    ('aor = "sip:pi@x"\nboard = "pi9"\n', "board: no board 'pi9'"),
    ('aor = "sip:pi@x"\nrole = "server"\n', "role: one of auto, peer, client, not 'server'"),
    ('aor = "sip:pi@x"\nbord = "pi4-deskphone"\n', "bord: no such setting"),
    ('aor = "sip:pi@x\n', "not TOML"),
])
def test_a_mistake_is_one_line_naming_the_file_and_the_key(tmp_path: Path, text: str, says: str):
    path = written(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert str(raised.value).startswith(f"{path}: ") and says in str(raised.value), raised.value
    assert "\n" not in str(raised.value)


def test_the_command_exits_2_with_that_line_and_starts_nothing(tmp_path: Path):
    path = written(tmp_path, 'aor = "pi@peerphone.local"\nport = 0\nsip_port = 0\n')
    ran = peerphone("device", str(path), timeout=30)
    assert ran.returncode == 2
    assert ran.stderr.strip() == f"peerphone: error: {path}: aor: the address 'pi@peerphone.local' is not a sip: " \
                                 "URI like sip:bob@peerphone.local", ran.stderr
    assert ran.stdout == ""


def test_a_missing_file_says_where_it_was_looked_for(tmp_path: Path):
    ran = peerphone("device", str(tmp_path / "peerphone.toml"), timeout=30)
    assert ran.returncode == 2 and "peerphone.toml: no such file" in ran.stderr, ran.stderr


@pytest.mark.sip
def test_the_device_joins_the_overlay_and_its_phone_registers(tmp_path: Path):
    peers = [start_peer()]
    device = None
    try:
        path = written(tmp_path, f'aor = "sip:pi@peerphone.local"\nbootstrap = ["{peers[0].addr}"]\n'
                                 'advertise = "127.0.0.1"\nport = 0\nsip_port = 0\n')
        device = LineProc.start([sys.executable, "-m", "peerphone", "device", str(path)])
        device.expect(r"^registered sip:pi@peerphone.local at 127\.0\.0\.1:", timeout=40)
        called = peerphone("call", "sip:pi@peerphone.local", "--proxy", peers[0].sip, "--aor",
                           "sip:host@peerphone.local", "--seconds", "1")  # found through another peer
        assert called.returncode == 0, called.stdout + called.stderr
        device.expect(r"^incoming call from .*sip:host@peerphone.local", timeout=10)
    finally:
        if device is not None:
            device.stop()
        stop(peers)


def test_only_a_board_without_a_hook_answers_by_itself():
    from peerphone.hw.board import load as load_board

    root = Path(__file__).resolve().parents[2] / "board"
    answers = {name: load_board(root / f"{name}.toml").answers_itself
               for name in ("qemu-virt", "pi4-deskphone", "desktop", "fieldkit")}
    assert answers == {"qemu-virt": True, "pi4-deskphone": False, "desktop": False, "fieldkit": False}
