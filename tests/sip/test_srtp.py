"""SRTP between two pjsua2 phones (issue 15): the tone is heard at the far end, and the RTP
captured on the loopback while it plays is not the tone. The same call with --srtp off is
the control: there, the captured PCMU payloads, decoded, are the 1 kHz tone."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from peerphone.app.tone import dominant_frequency

from tests.procs import stop
from tests.sip.world import DOMAIN, start_overlay, start_phone

pytestmark = [pytest.mark.sip,
              pytest.mark.skipif(os.geteuid() != 0, reason="capturing on the loopback needs root (CI runs as root)")]

ETH_P_ALL = 0x0003
CAPTURE_S = 6.0


def _capture_pcmu(seconds: float, out: list[bytes]) -> None:
    """PCMU payloads (RTP version 2, payload type 0) of UDP datagrams seen on lo for `seconds`."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL)) as s:
        s.bind(("lo", 0))
        s.settimeout(0.2)
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # bounded by the clock
            try:
                frame, meta = s.recvfrom(65536)
            except socket.timeout:
                continue
            if meta[2] == socket.PACKET_OUTGOING:
                continue  # each datagram is seen twice on lo: keep the incoming copy
            ip = frame[14:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
                continue
            udp = ip[(ip[0] & 0x0F) * 4:]
            rtp = udp[8:]
            if len(rtp) >= 12 + 160 and rtp[0] >> 6 == 2 and rtp[1] & 0x7F == 0:
                out.append(rtp[12:12 + 160])


def _mulaw(payloads: list[bytes]) -> list[int]:
    """G.711 mu-law bytes as linear samples."""
    samples = []
    for byte in b"".join(payloads):
        u = ~byte & 0xFF
        magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
        samples.append((0x84 - magnitude) if u & 0x80 else (magnitude - 0x84))
    return samples


def _tone_share(samples: list[int], hz: float = 1000, rate: int = 8000) -> float:
    """The share of the signal's energy within 20 Hz of `hz` (noise: about 1%; the tone
    between packets of silence from the other direction: about half)."""
    import numpy as np

    data = np.asarray(samples, dtype=np.float64)
    power = np.abs(np.fft.rfft(data * np.hanning(data.size))) ** 2
    power[0] = 0.0
    freqs = np.fft.rfftfreq(data.size, 1 / rate)
    return float(power[np.abs(freqs - hz) <= 20].sum() / power.sum())


@pytest.fixture(scope="module")
def overlay():
    peers = start_overlay(2)
    yield peers
    stop(peers)


@pytest.mark.parametrize("srtp", ["optional", "off"])
def test_the_tone_is_heard_and_on_the_wire_only_without_srtp(overlay, tmp_path: Path, srtp: str):
    bob = start_phone(f"bob{srtp}", overlay[0].sip, "--srtp", srtp, record_dir=tmp_path)
    alice = start_phone(f"alice{srtp}", overlay[1].sip, "--srtp", srtp)
    payloads: list[bytes] = []
    try:
        alice.send(f"call sip:bob{srtp}@{DOMAIN} tone=1000 seconds=4")
        bob.expect(rf"^incoming call from .*sip:alice{srtp}@")
        capture = threading.Thread(target=_capture_pcmu, args=(CAPTURE_S, payloads))
        capture.start()
        hz, level = dominant_frequency(Path(bob.expect(r"^recorded (\S+)").group(1)))
        capture.join()
        assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)  # heard at the far end either way
    finally:
        alice.stop()
        bob.stop()
    assert len(payloads) > 100  # the call's RTP was captured (about 50 datagrams a second each way)
    share = _tone_share(_mulaw(payloads))
    if srtp == "off":
        assert share > 0.2, share  # the control: plain RTP carries the tone (measured: 0.5)
    else:
        assert share < 0.05, share  # encrypted: what the wire carries has no more at 1 kHz than noise
