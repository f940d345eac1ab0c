"""The role policy on real links (issue 14), each host a network namespace: a peer whose link
nftables makes lossy becomes a client, and a peer again once the link heals; a link that
breaks and heals every 10 s changes its role at most once per dwell time; a phone whose host
lets in only answers (a firewall, a NAT's filter) finds out, ends as a client, and is called
through its admitting peer; two such phones, each behind its own filter, call each other
through their admitting peers."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from peerphone.app.tone import dominant_frequency

from tests.netns import Hosts, Overlay, hosts, overlay_beside
from tests.procs import LineProc
from tests.sip.world import DOMAIN

pytestmark = pytest.mark.netns
DWELL_S = 30
MAINTENANCE_MS = "200"


def start_subject(lab: Hosts, net: Overlay) -> LineProc:
    node = lab.run(net.subject, "peer", "--listen", f"{net.subject_ip}:0", "--bootstrap", net.bootstrap,
                   "--sip-listen", "off",
                   "--maintenance-ms", MAINTENANCE_MS, "--role-dwell-s", str(DWELL_S))
    assert "all good" in node.expect(r"^role peer: ").string
    node.expect(r"^listening ")
    return node


def test_a_peer_on_a_lossy_link_becomes_a_client_and_a_peer_again_once_it_heals():
    with hosts() as lab:
        net = overlay_beside(lab, MAINTENANCE_MS)
        node = start_subject(lab, net)
        lab.lossy(net.subject, 30)
        assert "to neighbours (client above" in node.expect(r"^role client: ", timeout=DWELL_S + 40).string
        node.expect(r"^role client: in the overlay through ", timeout=90)
        lab.heal(net.subject)
        assert "all good" in node.expect(r"^role peer: ", timeout=DWELL_S + 90).string
        node.expect(r"^role peer: in the overlay", timeout=60)


def test_a_link_that_breaks_and_heals_every_10_s_does_not_make_the_role_flap():
    with hosts() as lab:
        net = overlay_beside(lab, MAINTENANCE_MS)
        node = start_subject(lab, net)
        started, seconds, lines = time.monotonic(), 120, []
        for i in range(seconds // 10):
            lab.lossy(net.subject, 40) if i % 2 == 0 else lab.heal(net.subject)
            lines += node.collect(10)
        changes = [line for line in lines if line.startswith("role ") and "in the overlay" not in line]
        elapsed = time.monotonic() - started
        assert changes, "a link lossy half the time should make a peer a client at least once"
        assert len(changes) <= elapsed / DWELL_S + 1, changes


def test_a_phone_others_cannot_reach_ends_as_a_client_and_is_still_called_through_its_peer(tmp_path: Path):
    pytest.importorskip("pjsua2", reason="pjsua2-python is installed by tools/setup --test on x86_64")
    with hosts() as lab:
        net = overlay_beside(lab, MAINTENANCE_MS, DOMAIN)
        rest, subject, subject_ip, bootstrap, front = net.rest, net.subject, net.subject_ip, net.bootstrap, net.front
        lab.unsolicited_dropped(subject)  # a firewall, or a NAT's filter, before the phone starts
        bob = lab.run(subject, "phone", "--aor", f"sip:bob@{DOMAIN}", "--bootstrap", bootstrap,
                      "--listen", f"{subject_ip}:0", "--sip-listen", f"{subject_ip}:0",
                      "--maintenance-ms", MAINTENANCE_MS, "--role-dwell-s", str(DWELL_S),
                      "--record-dir", str(tmp_path), stdin=subprocess.PIPE)
        assert "all good" in bob.expect(r"^role peer: ").string  # nothing known of its reachability yet
        bob.expect(rf"^registered sip:bob@{DOMAIN}")
        assert "cannot reach this address" in bob.expect(r"^role client: ", timeout=DWELL_S + 30).string
        bob.expect(r"^role client: in the overlay through ", timeout=60)
        bob_node = bob.saw(r"^listening ").split()[1]
        for _ in range(20):  # the client's own reach test, soon after it attached
            shown = lab.peerphone(subject, "stat", "--via", bob_node).stdout
            if re.search(r"^  reachable\s+0$", shown, re.M):
                break
            time.sleep(0.5)
        assert re.search(r"^role\s+client", shown, re.M) and re.search(r"^  reachable\s+0$", shown, re.M), shown
        alice = lab.run(rest, "phone", "--aor", f"sip:alice@{DOMAIN}", "--proxy", front, stdin=subprocess.PIPE)
        alice.expect(rf"^registered sip:alice@{DOMAIN}")
        alice.send(f"call sip:bob@{DOMAIN} tone=1000 seconds=2")
        bob.expect(r"^incoming call from ", timeout=30)
        assert alice.expect(r"^call ended \((\d+)", timeout=30).group(1) == "200"
        hz, level = dominant_frequency(Path(bob.expect(r"^recorded (\S+)").group(1)))
        assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)


def test_two_clients_behind_filters_call_each_other_through_their_admitting_peers(tmp_path: Path):
    """Each client's front answers the other's by way of the caller's admitting peer (the Tunnel's
    reply_via): sent to the caller's own address, as it once was, the filter in front of it drops it."""
    pytest.importorskip("pjsua2", reason="pjsua2-python is installed by tools/setup --test on x86_64")
    with hosts() as lab:
        rest, home, office = lab.host("rest"), lab.host("home"), lab.host("office")
        rest_ip, home_ip = lab.wire(rest, home)
        rest_ip_too, office_ip = lab.wire(rest, office)
        lab.router(rest)
        lab.route_via(home, rest_ip)
        lab.route_via(office, rest_ip_too)
        first = lab.run(rest, "peer", "--role", "peer", "--listen", f"{rest_ip}:0", "--sip-listen", "off",
                        "--maintenance-ms", MAINTENANCE_MS)
        bootstrap = first.expect(r"^listening (\S+) ").group(1)
        for _ in range(2):
            lab.run(rest, "peer", "--role", "peer", "--listen", f"{rest_ip}:0", "--sip-listen", "off",
                    "--maintenance-ms", MAINTENANCE_MS, "--bootstrap", bootstrap).expect(r"^listening ")
        phones = {}
        for user, host, ip in (("alice", home, home_ip), ("bob", office, office_ip)):
            lab.unsolicited_dropped(host)
            phone = lab.run(host, "phone", "--aor", f"sip:{user}@{DOMAIN}", "--role", "client",
                            "--bootstrap", bootstrap, "--listen", f"{ip}:0", "--sip-listen", f"{ip}:0",
                            "--maintenance-ms", MAINTENANCE_MS, "--record-dir", str(tmp_path / user),
                            stdin=subprocess.PIPE)
            phone.expect(r"^listening \S+ id=\S+ client of ", timeout=60)
            phone.expect(rf"^registered sip:{user}@{DOMAIN}", timeout=60)
            phones[user] = phone
        alice, bob = phones["alice"], phones["bob"]
        alice.send(f"call sip:bob@{DOMAIN} tone=1000 seconds=2")
        bob.expect(r"^incoming call from ", timeout=30)
        assert alice.expect(r"^call ended \((\d+)", timeout=30).group(1) == "200"
        hz, level = dominant_frequency(Path(bob.expect(r"^recorded (\S+)").group(1)))
        assert abs(hz - 1000) <= 20 and level > 0.05, (hz, level)
