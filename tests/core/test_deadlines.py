"""The deadline heap every sans-I/O state machine uses: moves, removals, ties, literal times."""

from peerphone.core.deadlines import Deadlines


def test_keys_come_due_in_deadline_order_and_ties_in_the_order_they_were_set():
    d: Deadlines[str] = Deadlines()
    for key, at in (("c", 30), ("a", 10), ("b", 10), ("d", 40)):
        d.set(key, at)
    assert d.next_ms() == 10
    assert d.pop_due(9) == []
    assert d.pop_due(30) == ["a", "b", "c"]
    assert len(d) == 1 and "d" in d and d.next_ms() == 40


def test_a_moved_or_discarded_key_is_not_due_at_its_old_deadline():
    d: Deadlines[int] = Deadlines()
    d.set(1, 10)
    d.set(2, 20)
    d.set(1, 50)  # moved later
    d.discard(2)
    assert d.next_ms() == 50
    assert d.pop_due(49) == []
    d.set(1, 10)  # and back earlier: due once, not twice
    assert d.pop_due(100) == [1] and d.next_ms() is None and len(d) == 0
