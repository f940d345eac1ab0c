"""The sound card's mixer: the earpiece volume and microphone gain a board file asks for, set
through pyalsaaudio where the card has such controls, and skipped with a log line where it
has not (a USB handset dongle may have no capture control; the terminal board has no card).
The sound itself goes through pjsua2 (a pjproject built with ALSA: tools/pjproject)."""

from __future__ import annotations

import logging
import re

from .board import Board

log = logging.getLogger("peerphone.hw")

# The controls that set each level, in the order cards usually name them.
PLAYBACK_CONTROLS = ("Speaker", "Headphone", "PCM", "Master")
CAPTURE_CONTROLS = ("Mic", "Capture")


def mixer_of(pcm: str) -> str:
    """The control device of a PCM's card: `plughw:CARD=Device,DEV=0` is on `hw:CARD=Device`."""
    card = re.match(r"(?:plug)?hw:(?:CARD=)?([^,]+)", pcm)
    return f"hw:CARD={card.group(1)}" if card else "default"


def set_levels(board: Board) -> list[str]:
    """Set the board's levels; what was done or skipped, one line each (also logged)."""
    wanted = [(what, level, controls, capture) for what, level, controls, capture in (
        ("earpiece volume", board.earpiece_volume, PLAYBACK_CONTROLS, False),
        ("microphone gain", board.microphone_gain, CAPTURE_CONTROLS, True)) if level is not None]
    if not wanted:
        return []
    device = board.mixer or mixer_of(board.earpiece)
    try:
        import alsaaudio
    except ImportError:
        return [_skipped("mixer levels skipped: pyalsaaudio is not installed (pip install 'peerphone[sound]')")]
    try:
        present = alsaaudio.mixers(device=device)
    except alsaaudio.ALSAAudioError as e:
        return [_skipped(f"mixer levels skipped: no mixer {device!r} ({e})")]
    lines = []
    for what, level, controls, capture in wanted:
        control = next((c for c in controls if c in present), None)
        if control is None:
            lines.append(_skipped(f"{what} skipped: mixer {device!r} has none of {', '.join(controls)}"))
            continue
        try:
            alsaaudio.Mixer(control, device=device).setvolume(
                level, pcmtype=alsaaudio.PCM_CAPTURE if capture else alsaaudio.PCM_PLAYBACK)
        except alsaaudio.ALSAAudioError as e:
            lines.append(_skipped(f"{what} skipped: {device!r} {control}: {e}"))
            continue
        lines.append(f"{what} {level}% on {device!r} {control}")
        log.info("%s", lines[-1])
    return lines


def _skipped(line: str) -> str:
    log.warning("%s", line)
    return line
