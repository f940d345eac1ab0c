"""Tones by frequency and cadence: what an FFT finds in them, and where they are silent."""

from __future__ import annotations

import numpy as np
import pytest
from peerphone.hw.board import COUNTRIES, ToneSpec
from peerphone.hw.tones import Tone

RATE = 16_000


def peaks(samples: np.ndarray, n: int) -> list[int]:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    found: list[int] = []
    for i in np.argsort(spectrum)[::-1]:
        if all(abs(freqs[i] - f) > 20 for f in found):
            found.append(int(round(freqs[i])))
        if len(found) == n:
            return sorted(found)
    return sorted(found)


@pytest.mark.parametrize("country,name,freqs", [("us", "dial", [350, 440]), ("us", "ringback", [440, 480]),
                                                ("us", "busy", [480, 620]), ("de", "dial", [425])])
def test_a_tone_has_its_country_s_frequencies(country, name, freqs):
    tone = Tone(COUNTRIES[country][name], RATE)
    assert peaks(tone.samples(0, RATE).astype(float), len(freqs)) == freqs


def test_a_cadence_sounds_and_pauses_in_step_however_the_blocks_fall():
    tone = Tone(ToneSpec((480, 620), (500, 500)), RATE)  # busy: half a second each
    whole = tone.samples(0, 2 * RATE)
    blocks = np.concatenate([tone.samples(start, 160) for start in range(0, 2 * RATE, 160)])
    assert np.array_equal(whole, blocks)
    loud = [int(np.abs(whole[i:i + RATE // 10]).max()) for i in range(0, 2 * RATE, RATE // 10)]
    assert all(v > 10_000 for v in loud[0:5] + loud[10:15]) and all(v == 0 for v in loud[5:10] + loud[15:20])


def test_two_frequencies_never_clip_and_bursts_fade_in():
    tone = Tone(COUNTRIES["us"]["reorder"], RATE)
    samples = tone.samples(0, RATE)
    assert np.abs(samples).max() <= 0.5 * 32767 + 1
    assert abs(int(samples[0])) < 200  # the first sample of a burst is near silence, not a click


@pytest.mark.parametrize("spec,seconds", [(COUNTRIES["us"]["dial"], 1.0), (COUNTRIES["uk"]["ringback"], 3.0)])
def test_a_tone_file_holds_one_period_that_loops_without_a_seam(tmp_path, spec, seconds):
    import wave

    tone = Tone(spec, RATE)
    tone.write_wav(tmp_path / "t.wav")
    with wave.open(str(tmp_path / "t.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        once = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(once) == int(seconds * RATE)
    assert np.array_equal(np.tile(once, 2), tone.samples(0, 2 * len(once)))  # looped, it is the tone itself
