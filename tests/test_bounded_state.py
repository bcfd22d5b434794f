"""Bounded resources, fast: what a worker holds returns to ~0 after retention, and the id memory,
`forgotten` and the counters stay bounded. The long version is tests/soak/test_bounded_state.py."""

from __future__ import annotations

from tests.bounded import T0_S, new_run, play


def test_ended_events_leave_nothing_behind_after_retention():
    run = new_run()
    # 12 events, one after another (a new one every 15 min, each 10 min long, 25 attendees)
    schedule = [(f"ev{k}", T0_S + k * 900, 25, 600) for k in range(12)]
    samples = []
    play(run, schedule, until_s=T0_S + 12 * 900 + 2 * run.settings.retention_s + 120, sample=lambda r: samples.append(r.held()))
    assert run.summaries == 12
    end = run.held()
    assert (end.events, end.attendees, end.ids, end.id_owner, end.views, end.state_keys) == (0, 0, 0, 0, 0, 0)
    # never more than the running event and the one in retention (+ the next one's scheduled record)
    assert max(s.events for s in samples) <= 3
    assert max(s.attendees for s in samples) <= 3 * 25
    assert max(s.state_keys for s in samples) <= 3 * 26
    # expired ids are remembered for max(retention, 1 h) of wall time only: at most the events of the last hour+
    assert max(s.forgotten for s in samples) <= 3600 // 900 + 2
    assert end.counter_keys <= 10  # topics, reasons and caps: fixed sets


def test_dedup_memory_of_a_long_event_is_bounded_by_the_horizon():
    """An 8-hour event, 10 attendees with a heartbeat every 30 s (9,600 interactions): the ids remembered per event
    follow the de-dup horizon (120 s here: ~4 per attendee), not the event's length."""
    run = new_run(dedup_horizon_s=120.0, retention_s=60.0)
    samples = []
    play(run, [("long", T0_S + 60, 10, 8 * 3600)], until_s=T0_S + 8 * 3600 + 600,
         sample=lambda r: samples.append(r.held()))
    live = [s for s in samples if s.events]
    assert len(live) > 900
    per_attendee = 120 // 30 + 3  # ids within the horizon, plus the ones a batch adds before pruning
    assert max(s.ids for s in live) <= 10 * per_attendee
    assert max(s.id_owner for s in live) <= 10 * per_attendee
    assert run.held().events == 0 and run.held().state_keys == 0
