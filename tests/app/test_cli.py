"""The `peerphone` command against real peer processes on 127.0.0.1."""

import signal
import socket
import time

import pytest

from tests.procs import LineProc, peerphone, start_peer, stop


@pytest.fixture
def ring():
    peers = [start_peer()]
    try:
        peers += [start_peer(bootstrap=peers[0].addr) for _ in range(3)]
        _wait_ring(peers)
        yield peers
    finally:
        stop(peers)


def _wait_ring(peers, timeout_s=20.0):
    """Until every peer's successor is the next id on the sorted ring."""
    ids = sorted(p.node_id for p in peers)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        good = 0
        for p in peers:
            out = peerphone("stat", "--via", p.addr).stdout
            succ = next((line.split()[1] for line in out.splitlines() if line.startswith("successors")), "")
            want = f"{ids[(ids.index(p.node_id) + 1) % len(ids)]:040x}"[:8]
            good += succ == want
        if good == len(peers):
            return
        time.sleep(0.2)
    raise AssertionError("ring did not form")


@pytest.mark.parametrize("args", [
    ["lab", "--peers", "1x"],
    ["lab", "--peers", "1"],
    ["lab", "--kill", "0.9"],
    ["peer", "--listen", "nonsense"],
    ["peer", "--listen", "127.0.0.1:70000"],
    ["put", "k", "v", "--via", "127.0.0.1:notaport"],
    ["put", "k", "v"],
    ["get", "k", "--via", "127.0.0.1:1", "--overlay", ""],
    ["frobnicate"],
    ["sim", "--nodes", "10", "--seed", "1", "--calls", "-1"],
    ["sim", "--nodes", "10", "--seed", "1", "--calls", "5", "--phones", "1"],
    ["sim", "--nodes", "10", "--seed", "1", "--calls", "5", "--fail-fraction", "0.5"],
    ["sim", "--nodes", "10", "--seed", "1", "--battery-share", "1"],
    ["sim", "--nodes", "10", "--seed", "1", "--battery-share", "0.5", "--topology", "kademlia"],
    ["peer", "--role", "server"],
    ["peer", "--role-dwell-s", "0"],
    ["peer", "--listen", "127.0.0.1:0", "--sip-listen", "off", "--bootstrap", "127.0.0.1:9", "--battery",
     "/nonexistent"],
])
def test_bad_arguments_give_one_line_and_status_2(args):
    result = peerphone(*args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_battery_to_follow_needs_the_policy(tmp_path):
    (tmp_path / "capacity").write_text("80\n")
    (tmp_path / "status").write_text("Discharging\n")
    for role in ("--client", "--role=peer"):
        result = peerphone("peer", "--listen", "127.0.0.1:0", "--sip-listen", "off", "--bootstrap", "127.0.0.1:9",
                           role, "--battery", str(tmp_path))
        assert result.returncode == 2 and "--battery needs --role auto" in result.stderr, result.stderr


def test_a_port_in_use_is_a_one_line_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        result = peerphone("peer", "--listen", f"127.0.0.1:{s.getsockname()[1]}")
    assert result.returncode == 2 and "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_put_and_get_through_different_peers(ring):
    stored = peerphone("put", "sip:alice@lab", "contact-1", "--via", ring[1].addr)
    assert stored.returncode == 0, stored.stderr
    for p in ring:
        got = peerphone("get", "sip:alice@lab", "--via", p.addr)
        assert got.returncode == 0 and got.stdout.strip() == "contact-1", got
    missing = peerphone("get", "sip:nobody@lab", "--via", ring[2].addr)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_another_overlay_is_ignored(ring):
    result = peerphone("get", "k", "--via", ring[0].addr, "--overlay", "another", timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_garbage_datagrams_are_counted_and_the_peer_keeps_serving(ring):
    host, port = ring[0].addr.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for payload in (b"", b"\xc1", b"\x91" * 1000, b"x" * 1400, b"\x99\x01" + b"\x00" * 50):
            s.sendto(payload, (host, int(port)))
    assert peerphone("put", "after-garbage", "ok", "--via", ring[0].addr).returncode == 0
    stat = peerphone("stat", "--via", ring[0].addr).stdout
    drops = {line.split()[0]: int(line.split()[1]) for line in stat.splitlines() if line.strip().startswith("drop.")}
    assert sum(drops.values()) >= 4, stat
    assert peerphone("get", "after-garbage", "--via", ring[3].addr).stdout.strip() == "ok"


def test_sigterm_leaves_the_overlay_and_keeps_the_values(ring):
    for i in range(10):
        assert peerphone("put", f"key-{i}", f"v{i}", "--via", ring[i % 4].addr).returncode == 0
    leaver = ring[1]
    leaver.proc.send_signal(signal.SIGTERM)
    assert leaver.proc.wait(timeout=10) == 0
    leaver.line_proc.stop()
    assert "left the overlay" in "".join(leaver.line_proc.stderr)
    rest = [p for p in ring if p is not leaver]
    _wait_ring(rest)
    for i in range(10):
        got = peerphone("get", f"key-{i}", "--via", rest[i % 3].addr)
        assert got.stdout.strip() == f"v{i}", got


def test_version_names_the_event_loop():
    result = peerphone("--version")
    assert result.returncode == 0 and "event loop" in result.stdout


def test_without_uvloop_the_peer_runs_on_plain_asyncio():
    import subprocess
    import sys

    blocked = ("import sys; sys.modules['uvloop'] = None; from peerphone.app.cli import main; "
               "sys.exit(main(sys.argv[1:]))")
    version = subprocess.run([sys.executable, "-c", blocked, "--version"], capture_output=True, text=True, timeout=30)
    assert "event loop: asyncio" in version.stdout
    proc = LineProc.start([sys.executable, "-c", blocked, "peer", "--listen", "127.0.0.1:0",
                           "--sip-listen", "127.0.0.1:0"])
    try:
        addr = proc.expect(r"^listening (\S+) ").group(1)
        assert peerphone("put", "k", "plain", "--via", addr).returncode == 0
        assert peerphone("get", "k", "--via", addr).stdout.strip() == "plain"
    finally:
        proc.stop()


def test_lists_and_maps_through_real_peers(ring):
    for value in ("first", "second"):
        assert peerphone("put", "inbox", value, "--append", "--via", ring[0].addr).returncode == 0
    for sub, value in (("home", "10.0.0.1"), ("work", "10.0.0.2")):
        assert peerphone("put", "sip:bob@lab", value, "--dict-key", sub, "--via", ring[1].addr).returncode == 0
    listed = peerphone("get", "inbox", "--list", "--via", ring[2].addr)
    assert listed.stdout.splitlines() == ["0: first", "1: second"]
    mapped = peerphone("get", "sip:bob@lab", "--map", "--via", ring[3].addr)
    assert mapped.stdout.splitlines() == ["home: 10.0.0.1", "work: 10.0.0.2"]
    assert peerphone("get", "inbox", "--via", ring[2].addr).returncode == 1  # no single value under it
    both = peerphone("put", "k", "v", "--append", "--dict-key", "x", "--via", ring[0].addr)
    assert both.returncode == 2 and "Traceback" not in both.stderr


def test_one_hop_peers_serve_puts_and_gets():
    peers = [start_peer("--topology", "onehop")]
    try:
        peers += [start_peer("--topology", "onehop", bootstrap=peers[0].addr) for _ in range(2)]
        _wait_ring(peers)
        assert peerphone("put", "kit", "ok", "--via", peers[1].addr).returncode == 0
        got = peerphone("get", "kit", "--via", peers[2].addr)
        assert got.stdout.strip() == "ok"
        hops = int(got.stderr.split("(")[1].split()[0])
        assert hops <= 2  # the client's datagram to its peer, and at most one overlay hop
    finally:
        stop(peers)


def test_call_refuses_what_it_would_play_as_silence(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    for args, why in ((["--play", str(text)], "not a WAV file"), (["--play", str(tmp_path / "none.wav")],
                      "no such file"), (["--seconds", "0"], "--seconds"), (["--tone", "1000", "--play", str(text)],
                      "not both")):
        result = peerphone("call", "sip:bob@peerphone.local", *args)
        assert result.returncode == 2 and why in result.stderr and "Traceback" not in result.stderr, result.stderr
