"""The role policy with literal times: thresholds, their gaps, the dwell time, and no flapping."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from peerphone.core.role import Conditions, LinkQuality, Role, RolePolicy, RoleThresholds

DWELL_MS = 60_000
MAINS = Conditions()


def battery(percent: int, charging: bool = False) -> Conditions:
    return Conditions(battery_percent=percent, external_power=charging)


def policy(now_ms: int = 0) -> RolePolicy:
    return RolePolicy(RoleThresholds(min_dwell_ms=DWELL_MS), now_ms=now_ms)


def test_a_pi_on_mains_with_nothing_measured_yet_starts_as_a_peer():
    decision = policy().decide(MAINS, now_ms=0)
    assert decision.role is Role.PEER and not decision.changed


def test_a_battery_in_the_gap_at_start_takes_the_cautious_role():
    assert policy().decide(battery(40), now_ms=0).role is Role.CLIENT
    assert policy().decide(battery(40, charging=True), now_ms=0).role is Role.PEER


def test_a_discharging_battery_makes_a_client_and_charging_a_peer_again_each_after_the_dwell():
    p = policy()
    assert p.decide(battery(80), now_ms=0).role is Role.PEER
    early = p.decide(battery(15), now_ms=10_000)
    assert early.role is Role.PEER and "dwell" in early.reason and "15%" in early.reason
    low = p.decide(battery(15), now_ms=DWELL_MS)
    assert low.role is Role.CLIENT and low.changed and "battery 15% and discharging" in low.reason
    assert p.decide(battery(90, charging=True), now_ms=DWELL_MS + 1000).role is Role.CLIENT  # dwell again
    back = p.decide(battery(90, charging=True), now_ms=2 * DWELL_MS)
    assert back.role is Role.PEER and back.changed and p.changes == 2


def test_a_reading_in_the_gap_keeps_whichever_role_the_node_has():
    peer = policy()
    peer.decide(battery(80), now_ms=0)
    assert peer.decide(battery(30), now_ms=10 * DWELL_MS).role is Role.PEER  # above 25: not low enough to leave
    client = policy()
    client.decide(battery(10), now_ms=0)
    assert client.decide(battery(45), now_ms=10 * DWELL_MS).role is Role.CLIENT  # not above 50: not back yet
    assert client.decide(battery(55), now_ms=10 * DWELL_MS).role is Role.PEER


def test_a_lossy_or_slow_link_makes_a_client_and_only_a_good_one_brings_it_back():
    p = policy()
    p.decide(MAINS, now_ms=0)
    lossy = p.decide(Conditions(loss=0.2, rtt_ms=50), now_ms=DWELL_MS)
    assert lossy.role is Role.CLIENT and "loss 20%" in lossy.reason
    assert p.decide(Conditions(loss=0.05, rtt_ms=50), now_ms=3 * DWELL_MS).role is Role.CLIENT  # in the gap
    assert p.decide(Conditions(loss=0.0, rtt_ms=50), now_ms=3 * DWELL_MS).role is Role.PEER
    slow = p.decide(Conditions(loss=0.0, rtt_ms=900), now_ms=5 * DWELL_MS)
    assert slow.role is Role.CLIENT and "round trip 900 ms" in slow.reason


def test_a_node_others_cannot_reach_is_a_client_and_an_untested_one_is_not_held_back():
    p = policy()
    assert p.decide(Conditions(reachable=None), now_ms=0).role is Role.PEER
    unreachable = p.decide(Conditions(reachable=False), now_ms=DWELL_MS)
    assert unreachable.role is Role.CLIENT and "cannot reach" in unreachable.reason
    assert p.decide(Conditions(reachable=True), now_ms=2 * DWELL_MS).role is Role.PEER


def test_a_link_that_breaks_and_heals_every_10_s_changes_the_role_at_most_once_per_dwell():
    p = policy()
    changes_at = []
    for tick in range(0, 600_000, 1_000):  # ten minutes, decided every second
        loss = 0.3 if (tick // 10_000) % 2 else 0.0
        if p.decide(Conditions(loss=loss, rtt_ms=40), now_ms=tick).changed:
            changes_at.append(tick)
    assert changes_at, "the link was lossy half of the time: the role must have changed"
    assert all(b - a >= DWELL_MS for a, b in zip(changes_at, changes_at[1:])), changes_at
    assert len(changes_at) <= 600_000 // DWELL_MS


@given(st.lists(st.tuples(st.integers(0, 30_000), st.integers(0, 100), st.booleans(),
                          st.floats(0, 1), st.one_of(st.none(), st.booleans())), max_size=200))
def test_whatever_the_readings_no_two_changes_are_closer_than_the_dwell(steps):
    p = policy()
    now, last_change = 0, None
    for gap_ms, percent, charging, loss, reachable in steps:
        now += gap_ms
        decision = p.decide(Conditions(percent, charging, 50.0, loss, reachable), now_ms=now)
        assert decision.role is p.role
        if decision.changed:
            assert last_change is None or now - last_change >= DWELL_MS
            last_change = now


@pytest.mark.parametrize("bad, words", [
    (RoleThresholds(battery_client_below=50, battery_peer_above=50), "battery"),
    (RoleThresholds(loss_client_above=0.02, loss_peer_below=0.05), "loss"),
    (RoleThresholds(rtt_client_above_ms=100, rtt_peer_below_ms=300), "round trip"),
])
def test_thresholds_without_a_gap_are_refused(bad: RoleThresholds, words: str):
    with pytest.raises(ValueError, match=words):
        RolePolicy(bad, now_ms=0)


def test_link_quality_is_unknown_until_enough_outcomes_then_follows_them():
    link = LinkQuality(window=16, min_samples=8)
    for _ in range(7):
        link.acknowledged(1, 100, now_ms=0)
    assert link.measured(now_ms=0) == (None, None)
    link.acknowledged(1, 100, now_ms=0)
    assert link.measured(now_ms=0) == (pytest.approx(100), 0.0)
    for i in range(200):  # one in five lost
        link.lost(1, now_ms=0) if i % 5 == 0 else link.acknowledged(1, 300, now_ms=0)
    assert link.measured(now_ms=0) == (pytest.approx(300, abs=5), pytest.approx(0.2, abs=0.08))
    for _ in range(100):
        link.acknowledged(1, 300, now_ms=0)
    assert link.measured(now_ms=0)[1] < 0.01  # type: ignore[operator]


def test_one_silent_neighbour_is_not_a_lossy_link_but_every_neighbour_losing_is():
    link = LinkQuality(window=16, min_samples=8)
    for _ in range(20):
        for neighbour in (1, 2, 3):
            link.acknowledged(neighbour, 20, now_ms=0)
        link.lost(4, now_ms=0)  # dead, not yet declared failed
    assert link.measured(now_ms=0) == (pytest.approx(20), 0.0)
    link.forget(4)
    for i in range(40):  # our own link drops a third of everything, to every neighbour
        for neighbour in (1, 2, 3):
            link.lost(neighbour, now_ms=0) if (i + neighbour) % 3 == 0 else link.acknowledged(neighbour, 20, now_ms=0)
    loss = link.measured(now_ms=0)[1]
    assert loss is not None and loss > 0.2


def test_neighbours_not_heard_for_a_while_no_longer_count():
    link = LinkQuality(window=16, min_samples=8, fresh_ms=120_000)
    for i in range(20):
        link.lost(1, now_ms=i * 1000)  # a neighbour of the role the node left, silent
    assert link.measured(now_ms=60_000)[1] == 1.0
    for i in range(20):
        link.acknowledged(2, 30, now_ms=100_000 + i * 5000)  # the peer a client keeps alive now
    assert link.measured(now_ms=195_000) == (30, 0.0)  # the first is stale by then
    assert link.measured(now_ms=195_000 + 120_001) == (None, None)  # and nothing heard since


def test_link_quality_keeps_a_bounded_number_of_neighbours():
    link = LinkQuality(window=16, min_samples=1, neighbours_max=4)
    for neighbour in range(1000):
        link.lost(neighbour, now_ms=0)
    for neighbour in range(996, 1000):
        link.acknowledged(neighbour, 10, now_ms=0)
    assert link.measured(now_ms=0)[1] == pytest.approx(0.5)  # only the last four, each one lost and one acknowledged


def test_a_client_for_its_link_or_its_reach_stays_one_until_they_are_seen_good_not_just_unknown():
    p = policy()
    assert p.decide(Conditions(loss=0.3, rtt_ms=20), now_ms=DWELL_MS).role is Role.CLIENT
    unknown = p.decide(MAINS, now_ms=3 * DWELL_MS)  # a new client's link: nothing measured yet
    assert unknown.role is Role.CLIENT and "not measured since it was poor" in unknown.reason
    assert p.decide(Conditions(loss=0.0, rtt_ms=20), now_ms=3 * DWELL_MS).role is Role.PEER
    assert p.decide(Conditions(reachable=False), now_ms=4 * DWELL_MS).role is Role.CLIENT
    assert p.decide(Conditions(loss=0.0, rtt_ms=20), now_ms=6 * DWELL_MS).role is Role.CLIENT
    assert p.decide(Conditions(loss=0.0, rtt_ms=20, reachable=True), now_ms=6 * DWELL_MS).role is Role.PEER


def test_a_client_for_its_battery_needs_no_link_measure_to_be_a_peer_on_its_charger():
    p = policy()
    assert p.decide(battery(10), now_ms=0).role is Role.CLIENT
    assert p.decide(battery(90, charging=True), now_ms=DWELL_MS).role is Role.PEER
