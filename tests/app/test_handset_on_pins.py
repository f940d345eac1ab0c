"""The whole phone (issue 12): two handsets on test rigs (tests/hw/rig.py: the real `peerphone
phone --board` on gpiozero's mock pins), real peer processes between them, and their
earpieces and microphones on ALSA PCMs through alsa-lib and a pjsua2 built with ALSA
(tools/pjproject). There is no sound card here: each earpiece is a PulseAudio null sink
(clocked, so pjmedia plays in real time) recorded from its monitor, and each microphone a
`file` PCM that reads a tone (REAL-PARTS.md, ALSA)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.hw import pulse
from tests.hw.pulse import PulseServer
from tests.procs import LineProc, peerphone, stop
from tests.sip.world import DOMAIN, start_overlay

pytestmark = pytest.mark.sip
RATE = 16_000  # pjmedia's conference clock: what the microphone PCMs are opened at
SOUND = os.environ.get("PEERPHONE_SOUND_PJSUA2", "")  # tools/test sets it to tools/pjproject's output
HEARD_LATE_S = 5.0  # how far the monitor's recording may lag behind the sink

if not SOUND:
    if os.environ.get("CI"):
        raise RuntimeError("PEERPHONE_SOUND_PJSUA2 is not set: tools/test builds pjproject with ALSA for this test")
    pytest.skip("needs pjsua2 built with ALSA: PEERPHONE_SOUND_PJSUA2=$(tools/pjproject)", allow_module_level=True)
if not pulse.available():
    pytest.skip("needs PulseAudio (tools/setup --test installs it)", allow_module_level=True)

BOARD = """
[board]
name = "{who}'s rig"
gpio = "rpigpio"

[hook]
pin = 17
off_when = "high"

[keypad]
rows = [5, 6, 13, 19]
cols = [12, 16, 20]
layout = ["123", "456", "789", "*0#"]

[ringer]
pin = 18

[lamps]
in_use = 23
message = 24

[audio]
earpiece = "{who}_earpiece"
microphone = "{who}_microphone"

[tones]
country = "us"
ring = {{ freqs_hz = [20], cadence_ms = [400, 200] }}

[speed_dial]
2 = "sip:bob@{domain}"
"""

ASOUND = """
pcm.pulsedev { type pulse }
"""
PCMS = """
pcm.{who}_earpiece {{
    type pulse
    device "{who}"
    hint {{ show on description "{who}'s earpiece" }}
}}
pcm.{who}_microphone {{
    type file
    slave.pcm "pulsedev"
    file "/dev/null"
    infile "{infile}"
    format "raw"
    hint {{ show on description "{who}'s microphone" }}
}}
"""


def tone_raw(path: Path, hz: float, seconds: float) -> None:
    t = np.arange(int(seconds * RATE)) / RATE
    (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tofile(path)


def strongest(samples: np.ndarray, n: int) -> list[int]:
    """The `n` strongest frequencies (Hz, at least 30 Hz apart), lowest first."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    found: list[int] = []
    for i in np.argsort(spectrum)[::-1]:
        if freqs[i] > 100 and all(abs(freqs[i] - f) > 30 for f in found):
            found.append(int(round(freqs[i])))
        if len(found) == n:
            break
    return sorted(found)


class Sound(PulseServer):
    """A sink per earpiece, recorded from its monitor; a `file` PCM per microphone, reading a tone."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__(names, RATE)
        config = ASOUND
        for name in names:
            tone = self.root / f"{name}-microphone.raw"
            config += PCMS.format(who=name, infile=tone)
        self.use_alsa_config(config)
        for name in names:
            self.start(["parec", "-d", f"{name}.monitor", "--format=s16le", f"--rate={RATE}", "--channels=1",
                        "--raw", "--latency-msec=20", str(self.root / f"{name}-earpiece.raw")])

    def heard(self, name: str) -> np.ndarray:
        """What `name`'s earpiece has played so far, as samples."""
        return np.fromfile(self.root / f"{name}-earpiece.raw", dtype="<i2").astype(np.float64)

    def next(self, name: str, seconds: float) -> np.ndarray:
        """The next `seconds` that `name`'s earpiece plays (it plays in real time)."""
        start = len(self.heard(name))
        deadline = time.monotonic() + seconds + HEARD_LATE_S
        while len(heard := self.heard(name)) < start + seconds * RATE:  # bounded: the sink runs, or the test fails
            assert time.monotonic() < deadline, f"{name}'s earpiece sink stopped"
            time.sleep(0.05)
        return heard[start:start + int(seconds * RATE)]


@pytest.fixture
def sound() -> Iterator[Sound]:
    sound = Sound(("alice", "bob"))
    try:
        tone_raw(sound.root / "alice-microphone.raw", 1000, 120)
        tone_raw(sound.root / "bob-microphone.raw", 2000, 120)
        yield sound
    finally:
        sound.close()


def launch_rig(who: str, proxy: str, sound: Sound, tmp_path: Path) -> LineProc:
    """`who`'s phone on a rig, with a board naming `who`'s earpiece and microphone."""
    board = tmp_path / f"{who}.toml"
    board.write_text(BOARD.format(who=who, domain=DOMAIN))
    env = {**sound.env, "PYTHONPATH": os.pathsep.join([SOUND, str(Path(__file__).parents[2])])}
    return LineProc.start([sys.executable, "-m", "tests.hw.rig", "phone", "--aor", f"sip:{who}@{DOMAIN}",
                           "--proxy", proxy, "--board", str(board)], stdin=subprocess.PIPE, env=env)


def start_rig(who: str, proxy: str, sound: Sound, tmp_path: Path) -> LineProc:
    rig = launch_rig(who, proxy, sound, tmp_path)
    try:
        rig.expect(rf"^registered sip:{who}@")
        rig.expect(r"^rig: the handset rests on its hook")
    except AssertionError:
        rig.stop()
        raise
    return rig


def test_a_call_made_and_answered_only_through_the_pins_carries_sound_both_ways(sound: Sound, tmp_path: Path):
    peers = start_overlay(3)
    alice = bob = None
    try:
        bob = start_rig("bob", peers[2].sip, sound, tmp_path)
        alice = start_rig("alice", peers[0].sip, sound, tmp_path)
        alice.send("hook up")
        alice.expect(r"^handset: dial tone")
        assert strongest(sound.next("alice", 0.5), 2) == [350, 440]

        alice.send("press 2")  # Bob's speed dial, with contact bounce
        alice.expect(r"^calling sip:bob@")
        cadence = [bob.expect(rf"^pin ringer {state} ([\d.]+)") for state in ("on", "off", "on")]
        times = [float(m.group(1)) for m in cadence]
        # The board's 400 ms on, 200 ms off, from below only: a busy machine makes them longer, never shorter.
        assert times[1] - times[0] >= 0.39 and times[2] - times[1] >= 0.19

        bob.send("hook up")
        bob.expect(r"^call established with .*alice@")
        alice.expect(r"^handset: connected")
        assert strongest(sound.next("bob", 1.0)[-RATE // 2:], 1) == [1000]  # Alice's microphone, in Bob's ear
        assert strongest(sound.next("alice", 0.5), 1) == [2000]              # and Bob's in Alice's

        alice.send("hook down")
        alice.expect(r"^handset: idle")
        bob.saw(r"^handset: far end hung up")  # and a tone until his hook goes down
        bob.saw(r"^call ended")
        bob.send("hook down")
        bob.expect(r"^handset: idle")
    finally:
        for rig in (alice, bob):
            if rig is not None:
                rig.stop()
        stop(peers)


def test_a_message_for_bob_while_he_is_away_lights_his_lamp_when_he_comes_back(sound: Sound, tmp_path: Path):
    peers = start_overlay(3)
    bob = None
    try:
        sent = peerphone("message", f"sip:bob@{DOMAIN}", "call me back", "--proxy", peers[0].sip,
                         "--aor", f"sip:alice@{DOMAIN}")
        assert "kept until it registers (202)" in sent.stdout, sent.stdout + sent.stderr
        bob = start_rig("bob", peers[1].sip, sound, tmp_path)
        bob.saw(r"^message from .*alice@.*: call me back$")
        bob.saw(r"^pin lamp message on ")
        bob.send("hook up")  # he lifts the handset: the message is taken as heard
        bob.expect(r"^pin lamp message off ")
    finally:
        if bob is not None:
            bob.stop()
        stop(peers)


def test_a_board_naming_an_alsa_device_this_machine_lacks_says_so_in_one_line(sound: Sound, tmp_path: Path):
    peers = start_overlay(1)
    try:
        rig = launch_rig("carol", peers[0].sip, sound, tmp_path)  # the machine has no carol_earpiece
        assert rig.proc.wait(30) == 1
        rig.stop()
        errors = [line for line in rig.stderr if line.startswith("peerphone:")]
        assert len(errors) == 1, rig.stderr
        assert errors[0].startswith("peerphone: no ALSA playback device 'carol_earpiece' (there are: ")
        assert "alice_earpiece" in errors[0]
    finally:
        stop(peers)

