"""Live snapshots are spaced so that they cannot starve the input (streams/outputs/snapshots.py)."""

from __future__ import annotations

import time

import orjson

from streams.outputs.snapshots import SnapshotPacing
from streams.processor import Processor, RawRecord
from streams.settings import Settings


def test_cheap_rounds_follow_the_interval_and_expensive_ones_are_spaced_out():
    pacing = SnapshotPacing(interval_s=1.0, max_share=0.25)
    assert pacing.due(100.0)
    pacing.done(100.0, 0.05)  # 50 ms: well within a quarter of the interval
    assert not pacing.due(100.9) and pacing.due(101.0)
    pacing.done(101.0, 1.0)  # a round of a huge audience took 1 s: the next waits 4 s from its start
    assert pacing.spacing_s == 4.0
    assert not pacing.due(104.9) and pacing.due(105.0)
    pacing.done(105.0, 0.1)  # the audience left: back to the interval
    assert pacing.due(106.0)


def test_a_real_round_of_a_large_event_sets_the_spacing():
    """The round time is what the processor really spends: 20,000 present attendees, measured as the worker does."""
    s = Settings(snapshot_interval_s=0.001, snapshot_max_share=0.25)
    proc = Processor(s, partitions=1)
    now = time.time()
    t0 = int(now * 1000) - 60_000
    proc.process([RawRecord(s.topic_events, 0, 0, b"big", orjson.dumps({"event_id": "big", "type": "started",
                                                                         "ts": t0}))], now)
    proc.process([RawRecord(s.topic_interactions, 0, a + 1, b"big", orjson.dumps(
        {"id": f"j{a}", "event_id": "big", "attendee_id": f"a{a}", "type": "join", "ts": t0 + a}))
        for a in range(20_000)], now)
    pacing = SnapshotPacing(s.snapshot_interval_s, s.snapshot_max_share)
    started = time.perf_counter()
    out = proc.tick(now, snapshots=True)
    pacing.done(now, time.perf_counter() - started)
    assert out.live[0]["attendees_current"] == 20_000
    assert pacing.spacing_s == pacing.last_round_s * 4 > s.snapshot_interval_s


def test_the_tick_comes_often_enough_not_to_skip_a_snapshot():
    """A tick as long as the snapshot interval sometimes fires a hair early and skips a whole interval: the tick
    runs at a quarter of the interval (and at least once a second for summaries and expiry)."""
    from streams.app import tick_interval

    pacing = SnapshotPacing(interval_s=1.0, max_share=0.25)
    pacing.done(100.0, 0.01)
    tick = tick_interval(Settings(snapshot_interval_s=1.0))
    ticks = [100.0 + i * tick - 0.001 for i in range(1, 9)]  # each a millisecond early
    first_due = next(t for t in ticks if pacing.due(t))
    assert first_due - 100.0 < 1.5  # with a 1-s tick: 1.999 s, a skipped snapshot
    assert tick_interval(Settings(snapshot_interval_s=30.0)) == 1.0
