"""SRTP between two pjsua2 phones (issue 15): the tone is heard at the far end, and the RTP
captured on the loopback while it plays is not the tone. The same call with --srtp off is
the control: there, the captured PCMU payloads, decoded, are the 1 kHz tone. With SIP over
TLS (phone to front, and front to front) the SDES keys are nowhere on the wire either; over
UDP, the control, they are."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from peerphone.app.tone import dominant_frequency

from tests.procs import stat_all, stop
from tests.sip.world import DOMAIN, start_overlay, start_phone

pytestmark = [pytest.mark.sip,
              pytest.mark.skipif(os.geteuid() != 0, reason="capturing on the loopback needs root (CI runs as root)")]

ETH_P_ALL = 0x0003
CAPTURE_S = 8.0  # the call's setup and its 4 s of tone


def _capture(seconds: float, out: list[tuple[int, bytes]]) -> None:
    """(protocol, payload) of the TCP segments and UDP datagrams seen on lo for `seconds`."""
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
                continue  # each packet is seen twice on lo: keep the incoming copy
            ip = frame[14:]
            if len(ip) < 20 or ip[0] >> 4 != 4:
                continue
            segment = ip[(ip[0] & 0x0F) * 4:int.from_bytes(ip[2:4], "big")]
            if ip[9] == socket.IPPROTO_UDP:
                out.append((ip[9], segment[8:]))
            elif ip[9] == socket.IPPROTO_TCP and len(segment) >= 20:
                out.append((ip[9], segment[(segment[12] >> 4) * 4:]))


def _pcmu(packets: list[tuple[int, bytes]]) -> list[bytes]:
    """The PCMU payloads (RTP version 2, payload type 0) among captured datagrams."""
    return [rtp[12:12 + 160] for proto, rtp in packets
            if proto == socket.IPPROTO_UDP and len(rtp) >= 12 + 160 and rtp[0] >> 6 == 2 and rtp[1] & 0x7F == 0]


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


@pytest.mark.parametrize("srtp, transport", [("optional", "udp"), ("off", "udp"), ("optional", "tls")])
def test_the_tone_is_heard_and_on_the_wire_only_without_srtp(overlay, tmp_path: Path, srtp: str, transport: str):
    name = f"{srtp}{transport}"
    fronts = [peer.sip_tls if transport == "tls" else peer.sip for peer in overlay]
    bob = start_phone(f"bob{name}", fronts[0], "--srtp", srtp, "--sip-transport", transport, record_dir=tmp_path)
    alice = start_phone(f"alice{name}", fronts[1], "--srtp", srtp, "--sip-transport", transport)
    packets: list[tuple[int, bytes]] = []
    capture = threading.Thread(target=_capture, args=(CAPTURE_S, packets))
    try:
        capture.start()
        alice.send(f"call sip:bob{name}@{DOMAIN} tone=1000 seconds=4")
        bob.expect(rf"^incoming call from .*sip:alice{name}@")
        hz, level = dominant_frequency(Path(bob.expect(r"^recorded (\S+)").group(1)))
        assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)  # heard at the far end either way
    finally:
        capture.join()
        alice.stop()
        bob.stop()
    payloads = _pcmu(packets)
    assert len(payloads) > 100  # the call's RTP was captured (about 50 datagrams a second each way)
    share = _tone_share(_mulaw(payloads))
    if srtp == "off":
        assert share > 0.2, share  # the control: plain RTP carries the tone (measured: 0.5)
    else:
        assert share < 0.05, share  # encrypted: what the wire carries has no more at 1 kHz than noise
    in_clear = [payload for _, payload in packets if b"SIP/2.0" in payload]
    keys_in_clear = [payload for payload in in_clear if b"a=crypto:" in payload]
    if transport == "udp":  # the control: the capture sees the signalling, and SRTP's keys in it
        assert in_clear and bool(keys_in_clear) == (srtp != "off")
    else:  # phones to fronts and front to front: no SIP on the wire but sealed
        assert not in_clear, in_clear[0][:200]
        stats = stat_all([peer.addr for peer in overlay])
        sessions = [dict(stat.counters).get("sip.tls_sessions", 0) for stat in stats]
        assert all(sessions), sessions  # each front took its phone's and the other front's
