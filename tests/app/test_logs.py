"""A flood of one kind of log line is written once per interval, with a count of the rest."""

from __future__ import annotations

import logging

from peerphone.app.logs import PER_FORMAT_MAX, OncePerInterval


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _written(records: list[logging.LogRecord], flood: OncePerInterval) -> list[str]:
    return [r.getMessage() for r in records if flood.filter(r)]


def _line(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("peerphone.net", logging.INFO, __file__, 1, msg, args, None)


def test_one_node_failing_a_thousand_times_is_one_line_per_interval_then_a_count():
    clock = Clock()
    limit = OncePerInterval(10.0, clock)
    assert _written([_line("node %s failed", "ab12") for _ in range(1000)], limit) == ["node ab12 failed"]
    assert _written([_line("node %s failed", "cd34")], limit) == ["node cd34 failed"]  # another node: its own line
    clock.now = 10.0
    assert _written([_line("node %s failed", "ab12")], limit) == [
        "node ab12 failed (and 999 more like it in 10 s)"]


def test_many_subjects_of_one_format_are_capped_per_interval():
    clock = Clock()
    limit = OncePerInterval(10.0, clock)
    written = _written([_line("sip: %s registered", f"sip:u{i}@x") for i in range(500)], limit)
    assert len(written) == PER_FORMAT_MAX
    clock.now = 10.0
    assert len(_written([_line("sip: %s registered", "sip:late@x")], limit)) == 1
