"""What a role asks of the node's configuration (app/roles.py): only a client the policy may make
a peer again, on external power, pays for watching its link and its reachability."""

from peerphone.app.roles import LINK_WATCH_KEEPALIVE_S, config_for
from peerphone.core.limits import Timing
from peerphone.core.peer import PeerConfig
from peerphone.core.role import Role
from peerphone.hw.power import PowerReading

BASE = PeerConfig(1)
MAINS, BATTERY = PowerReading(None, True), PowerReading(60, False)


def test_a_client_on_mains_under_the_policy_watches_its_link_and_reachability():
    config = config_for(BASE, Role.CLIENT, MAINS)
    assert config.client and config.attach and config.reach_check
    assert config.timing.client_keepalive_ms == LINK_WATCH_KEEPALIVE_S * 1000


def test_a_client_on_its_battery_or_by_choice_only_keeps_alive():
    for config in (config_for(BASE, Role.CLIENT, BATTERY), config_for(BASE, Role.CLIENT, MAINS, policy=False)):
        assert config.client and not config.reach_check
        assert config.timing.client_keepalive_ms == Timing().client_keepalive_ms


def test_a_peer_tests_its_reachability():
    config = config_for(BASE, Role.PEER, BATTERY)
    assert not config.client and not config.attach and config.reach_check
