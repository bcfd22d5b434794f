"""What /metrics adds for dashboards and alerts: the event's organiser, how late its figures are, dwell with the
open sessions, the ROI funnel and whether its figures are still provisional, input silence, partitions owned,
rebalances, and the standard process collectors of the worker's registry."""

from __future__ import annotations

import time

import orjson
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.app import input_topics
from streams.outputs.metrics import (
    DAY_S,
    ConsumerLag,
    LivePulseCollector,
    Ownership,
    exposition,
    worker_registry,
)
from streams.processor import Processor, RawRecord
from streams.settings import Settings
from streams.testing import raw, run_records

T0 = 1_767_000_000_000  # event time, ms


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def live_event(proc: Processor, organizer: str | None = "acme") -> None:
    """Event "e": started at T0, three attendees join; one leaves after 60 s, two stay."""
    meta = {"event_id": "e", "type": "scheduled", "ts": T0 - 60_000, "cost": 1000.0, "currency": "EUR"}
    if organizer:
        meta["organizer_id"] = organizer
    records = [raw("livepulse.events", meta, offset=0),
               raw("livepulse.events", {"event_id": "e", "type": "started", "ts": T0}, offset=1)]
    for n in range(3):
        records.append(raw("livepulse.interactions", {"id": f"j{n}", "event_id": "e", "attendee_id": f"a{n}",
                                                      "type": "join", "ts": T0 + n}, offset=2 * n))
    records.append(raw("livepulse.interactions", {"id": "l0", "event_id": "e", "attendee_id": "a0",
                                                  "type": "leave", "ts": T0 + 60_000}, offset=10))
    records.append(raw("livepulse.interactions", {"id": "h1", "event_id": "e", "attendee_id": "a1",
                                                  "type": "heartbeat", "ts": T0 + 90_000}, offset=11))
    proc.process(records, T0 / 1000 + 90)


def test_event_info_names_the_organiser_and_the_default_one():
    for organizer, shown in (("acme", "acme"), (None, "default")):
        proc = Processor(Settings(), partitions=1)
        live_event(proc, organizer)
        proc.tick(T0 / 1000 + 90, snapshots=True)
        got = samples(exposition(proc))
        assert got[("livepulse_event_info", (("event_id", "e"), ("organizer_id", shown)))] == 1


def test_data_delay_grows_while_the_input_is_silent_and_is_0_once_final():
    proc = Processor(Settings(), partitions=1)
    live_event(proc)
    proc.tick(T0 / 1000 + 90, snapshots=True)
    key = ("livepulse_event_data_delay_seconds", (("event_id", "e"),))
    delay = samples(exposition(proc))[key]
    # the newest record is at T0 + 90 s: the figures are as late as the wall clock is past it
    assert delay >= time.time() - (T0 / 1000 + 90) - 1
    proc.process([raw("livepulse.events", {"event_id": "e", "type": "ended", "ts": T0 + 120_000}, offset=20)],
                 T0 / 1000 + 120)
    proc.tick(T0 / 1000 + 86_400, snapshots=True)  # the summary is out
    assert samples(exposition(proc))[key] == 0


def test_dwell_including_open_sessions_counts_the_people_still_in_the_room():
    proc = Processor(Settings(), partitions=1)
    live_event(proc)
    proc.tick(T0 / 1000 + 90, snapshots=True)
    got = samples(exposition(proc))
    settled = got[("livepulse_dwell_seconds_total", (("event_id", "e"),))]
    with_open = got[("livepulse_dwell_including_open_seconds", (("event_id", "e"),))]
    # settled: a0's 60 s session and a1's dwell up to its heartbeat at 90 s; a2 has given no sign since its join
    assert 149 < settled < 151, settled
    # ... with a2's open session too: in the room up to the snapshot's event time (90 s)
    assert 239 < with_open < 241, with_open


def ended_with_roi(settings: Settings, t0: int) -> Processor:
    records = [
        raw(settings.topic_events, {"event_id": "e", "type": "scheduled", "ts": t0 - 60_000, "cost": 1000.0,
                                    "currency": "EUR", "organizer_id": "acme"}, key="e", offset=0),
        raw(settings.topic_interactions, {"id": "r0", "event_id": "e", "type": "registration", "ts": t0 - 50_000,
                                          "attendee_id": "a0"}, key="e", offset=2),
        raw(settings.topic_events, {"event_id": "e", "type": "started", "ts": t0}, key="e", offset=2),
        raw(settings.topic_interactions, {"id": "j0", "event_id": "e", "attendee_id": "a0", "type": "join",
                                          "ts": t0 + 1}, key="e", offset=3),
        raw(settings.topic_interactions, {"id": "j1", "event_id": "e", "attendee_id": "a1", "type": "join",
                                          "ts": t0 + 2}, key="e", offset=4),
        raw(settings.topic_events, {"event_id": "e", "type": "ended", "ts": t0 + 600_000}, key="e", offset=3),
    ]
    return run_records(records, settings, wall_start=t0 / 1000).processor


def test_roi_funnel_window_end_and_provisional_until_the_window_closes():
    settings = Settings(attribution_days=30, attribution_days_key_accounts=90)
    t0 = int(time.time() * 1000) - 3_600_000  # an event that ended an hour ago: its windows are open
    proc = ended_with_roi(settings, t0)
    ids = (("event_id", "e"), ("organizer_id", "acme"))
    got = samples(exposition(proc))
    assert got[("livepulse_roi_attendees", ids)] == 2
    assert got[("livepulse_roi_registrations", ids)] == 1
    assert ("livepulse_roi_mqls", ids) in got
    assert got[("livepulse_roi_cost", (("currency", "EUR"), *ids))] == 1000
    end = (t0 + 600_000) / 1000 + 90 * DAY_S  # the widest window: key accounts'
    assert got[("livepulse_roi_attribution_end_timestamp_seconds", ids)] == end
    assert got[("livepulse_roi_provisional", ids)] == 1
    # a CRM record dated after the window's end makes the figures final, whatever the wall clock says
    late = {"opportunity_id": "o-late", "organizer_id": "acme", "account_id": "nobody", "stage": "created",
            "amount": 1.0, "currency": "EUR", "ts": int(end * 1000) + 1000}
    proc.process([RawRecord(settings.topic_opportunities, 0, 100, b"acme", orjson.dumps(late))], end + 2)
    got = samples(exposition(proc))
    assert got[("livepulse_roi_provisional", ids)] == 0


def test_input_silence_partitions_and_rebalances_are_exported():
    settings = Settings()
    lag = ConsumerLag(input_topics(settings), (settings.topic_interactions, settings.topic_rekeyed))
    ownership = Ownership()
    proc = Processor(settings, partitions=4)
    got = samples(exposition(proc, consumer_lag=lag, ownership=ownership))
    assert not [k for k in got if k[0] == "livepulse_input_last_record_timestamp_seconds"], "nothing read yet"
    assert got[("livepulse_partitions_owned", ())] == 0 and got[("livepulse_rebalances_total", ())] == 0
    lag.read(settings.topic_interactions, 1234.5)
    ownership.recovered(3)
    ownership.recovered(2)
    got = samples(exposition(proc, consumer_lag=lag, ownership=ownership))
    assert got[("livepulse_input_last_record_timestamp_seconds", (("topic", settings.topic_interactions),))] \
        == 1234.5
    assert got[("livepulse_input_last_interaction_timestamp_seconds", ())] == 1234.5
    lag.read(settings.topic_opportunities, 2000.0)  # CRM records are not the live feed
    got = samples(exposition(proc, consumer_lag=lag, ownership=ownership))
    assert got[("livepulse_input_last_interaction_timestamp_seconds", ())] == 1234.5
    assert got[("livepulse_partitions_owned", ())] == 2 and got[("livepulse_rebalances_total", ())] == 2


def test_worker_registry_adds_the_standard_collectors_and_filters_by_name():
    registry = worker_registry(LivePulseCollector(Processor(Settings(), partitions=1)))
    names = {name for name, _ in samples(generate_latest(registry))}
    assert {"process_start_time_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total",
            "process_open_fds", "python_info", "livepulse_events_tracked"} <= names, names
    only = samples(generate_latest(registry.restricted_registry(["process_open_fds", "livepulse_events_tracked"])))
    assert {name for name, _ in only} == {"process_open_fds", "livepulse_events_tracked"}


def test_roi_is_final_once_the_wall_clock_is_past_the_window():
    settings = Settings(attribution_days=30, attribution_days_key_accounts=30)
    t0 = int(time.time() * 1000) - 31 * DAY_S * 1000  # ended 31 days ago: the 30-day windows closed a day ago
    got = samples(exposition(ended_with_roi(settings, t0)))
    ids = (("event_id", "e"), ("organizer_id", "acme"))
    assert got[("livepulse_roi_attribution_end_timestamp_seconds", ids)] < time.time()
    assert got[("livepulse_roi_provisional", ids)] == 0
