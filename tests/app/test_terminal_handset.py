"""The terminal handset (board/desktop.toml) driven as a person would, in tmux: a message kept
while away lights the lamp, lift, dial a speed dial, press a key in the call, hang up; against a real peer and
Bob's phone."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import start_peer, stop
from tests.sip.world import DOMAIN, start_phone

pytestmark = pytest.mark.sip
DESKTOP = Path(__file__).parents[2] / "board" / "desktop.toml"


class Tmux:
    """One tmux server of our own (its socket in tmp_path), one window."""

    def __init__(self, socket: Path, command: list[str]) -> None:
        self.base = ["tmux", "-S", str(socket)]
        subprocess.run([*self.base, "new-session", "-d", "-x", "200", "-y", "50", " ".join(command)], check=True)

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", *keys], check=True)

    def screen(self) -> str:
        return subprocess.run([*self.base, "capture-pane", "-p", "-S", "-200"], capture_output=True, text=True).stdout

    def wait_for(self, text: str, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on the screen in {timeout_s} s:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def test_a_person_at_a_terminal_lifts_dials_a_speed_dial_talks_and_hangs_up(tmp_path):
    peer = start_peer("--domain", DOMAIN)
    bob = alice = None
    try:
        bob = start_phone("bob", peer.sip)
        bob.send(f"message sip:alice@{DOMAIN} call me back")  # Alice is away: the overlay keeps it
        bob.expect(r"^message to sip:alice@.*kept")
        board = tmp_path / "desk.toml"
        board.write_text(DESKTOP.read_text() + f'\n[speed_dial]\n"1" = "sip:bob@{DOMAIN}"\n')
        command = [sys.executable, "-m", "peerphone", "phone", "--board", str(board), "--aor",
                   f"sip:alice@{DOMAIN}", "--proxy", peer.sip, "2>", str(tmp_path / "alice.log")]
        alice = Tmux(tmp_path / "tmux.sock", command)
        alice.wait_for("terminal handset: Enter lifts and hangs up")
        alice.wait_for("message from")  # delivered when she registered
        alice.wait_for("message lamp on")
        alice.keys("Enter")  # the handset is lifted
        screen = alice.wait_for("tone: dial")
        assert "call me back" in screen and "message lamp off" in screen
        alice.keys("1", "Enter")  # Bob's speed dial
        alice.wait_for(f"calling sip:bob@{DOMAIN}")
        bob.expect(r"^incoming call from .*alice")
        screen = alice.wait_for("handset: connected")
        assert "tone: ringback" in screen or "tone off" in screen
        bob.expect(r"^call established with .*alice")
        alice.keys("5", "Enter")  # a key in the call: an RFC 4733 event at Bob's end
        bob.expect(r"^dtmf 5 from .*alice")
        alice.keys("Enter")  # hung up
        alice.wait_for("handset: idle")
        bob.expect(r"^call ended")
    finally:
        if alice is not None:
            alice.close()
        if bob is not None:
            bob.stop()
        stop([peer])
