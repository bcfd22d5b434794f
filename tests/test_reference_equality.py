"""The streaming processor against the batch reference, on simulated webinars of several shapes, across batch
sizes, partition counts, delivery orders within the lateness, duplicates, and a restart from persisted state."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ingest.decode import Rejection, decode_event, decode_interaction
from streams.processor import Processor, RawRecord
from streams.settings import Settings
from streams.simulate.scenario import ScenarioConfig, concurrent_events, generate, generate_many
from streams.testing import Collected, run_records
from tests.reference import Params, assert_same, reference

NOW_S = 1_768_489_200 + 30 * 86_400
SETTINGS = Settings()
TOPIC = {"interactions": SETTINGS.topic_interactions, "events": SETTINGS.topic_events}


def to_raw(sim, partitions: int = 1) -> list[RawRecord]:
    """Kafka-like records: partition by key, offsets per partition, arrival order kept."""
    from streams.partitioning import partition_for

    offsets: dict[tuple, int] = {}
    out = []
    for r in sim:
        part = partition_for(r.key, partitions)
        tp = (TOPIC[r.topic], part)
        offsets[tp] = offsets.get(tp, -1) + 1
        out.append(RawRecord(tp[0], part, offsets[tp], r.key, r.value))
    return out


def arrivals_of(raw: list[RawRecord]) -> list[tuple[str, dict]]:
    """What the reference sees: the decodable records, in the order one event's partition delivers them."""
    out = []
    for r in raw:
        is_event = r.topic == SETTINGS.topic_events
        d = (decode_event if is_event else decode_interaction)(r.value, now_ms=NOW_S * 1000)
        if not isinstance(d, Rejection):
            out.append(("event" if is_event else "interaction", d))
    return out


def compare(got: Collected, raw: list[RawRecord]) -> None:
    expected = reference(arrivals_of(raw), Params())
    assert set(got.summaries) == set(expected), "one summary per ended event"
    for event_id, result in expected.items():
        assert_same(got.summaries[event_id], result.summary, f"summary[{event_id}]")
        minutes = sorted((m for m in got.minutes if m["event_id"] == event_id), key=lambda m: m["window_start"])
        assert_same(minutes, result.minutes, f"minutes[{event_id}]")
        leads = sorted((lead for lead in got.leads if lead["event_id"] == event_id), key=lambda x: x["attendee_id"])
        assert_same(leads, result.leads, f"leads[{event_id}]")


SHAPES = {
    "default": dict(registrants=150),
    "no drop, no faults": dict(registrants=80, drop_fraction=0.0, duplicate_rate=0, reorder_rate=0,
                               malformed_rate=0),
    "heavy faults": dict(registrants=120, duplicate_rate=0.1, reorder_rate=0.3, max_delay_s=25),
    "big drop, many vanish": dict(registrants=150, drop_fraction=0.6, vanish_rate=0.5),
    "short and tiny": dict(registrants=5, duration_s=300),
    "walk-ins only": dict(registrants=20, attend_rate=0.0, walk_in_rate=1.0),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [1, 2])
def test_one_webinar_equals_the_reference(shape, seed):
    raw = to_raw(generate(ScenarioConfig(seed=seed, **SHAPES[shape])))
    compare(run_records(raw, SETTINGS, batch_size=400, wall_start=NOW_S), raw)


@pytest.mark.parametrize("batch_size,partitions", [(1, 1), (7, 4), (500, 4), (5000, 3)])
def test_concurrent_webinars_any_batching_and_partitioning(batch_size, partitions):
    raw = to_raw(generate_many(concurrent_events(9, 4, registrants=60, duration_s=900)), partitions)
    got = run_records(raw, SETTINGS, batch_size=batch_size, partitions=partitions, wall_start=NOW_S)
    compare(got, raw)
    assert not got.rekeyed, "records keyed by event_id stay on their partition"


def _bounded_shuffle(raw: list[RawRecord], rnd: random.Random, max_shift_ms: int) -> list[RawRecord]:
    """Delay random records by up to `max_shift_ms` of event time (so none ends up later than the lateness)."""
    import orjson

    keyed = []
    for i, r in enumerate(raw):
        try:
            ts = orjson.loads(r.value)["ts"]
        except Exception:  # noqa: BLE001 - malformed or RFC 3339: keep its place
            ts = None
        if not isinstance(ts, int):
            keyed.append((keyed[-1][0] if keyed else 0, i, r))
            continue
        keyed.append((ts + (rnd.randint(0, max_shift_ms) if rnd.random() < 0.3 else 0), i, r))
    keyed.sort(key=lambda k: (k[0], k[1]))
    offsets: dict[str, int] = {}
    out = []
    for _, _, r in keyed:
        offsets[r.topic] = offsets.get(r.topic, -1) + 1
        out.append(r._replace(offset=offsets[r.topic]))
    return out


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([1, 50, 1000]))
def test_reordering_within_lateness_changes_nothing(seed, batch_size):
    base = to_raw(generate(ScenarioConfig(seed=seed, registrants=40, duration_s=600, reorder_rate=0,
                                          duplicate_rate=0.05)))
    shuffled = _bounded_shuffle(base, random.Random(seed), 9_000)  # + simulator's own <= 20 s stays < 30 s
    a = run_records(base, SETTINGS, batch_size=batch_size, wall_start=NOW_S)
    b = run_records(shuffled, SETTINGS, batch_size=batch_size, wall_start=NOW_S)
    compare(b, shuffled)
    for event_id in a.summaries:
        assert_same(b.summaries[event_id], a.summaries[event_id])
    key = lambda x: (x["event_id"], x["attendee_id"])  # noqa: E731
    assert_same(sorted(b.leads, key=key), sorted(a.leads, key=key))


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.8])
def test_restart_from_persisted_state_with_redelivery_changes_nothing(cut):
    raw = to_raw(generate_many(concurrent_events(4, 2, registrants=80, duration_s=900)), 2)
    split = int(len(raw) * cut)
    first = Processor(SETTINGS, partitions=2)
    before = Collected()
    for i in range(0, split, 300):
        before.add(first.process(raw[i:min(i + 300, split)], NOW_S))
    # a new worker restores the changelog state, then the last 200 records are delivered again (at-least-once)
    second = Processor(SETTINGS, partitions=2)
    for partition in (0, 1):
        items = [(k, v) for k, v in before.state.items() if any(first.event_partition.get(e) == partition
                                                                  for e in [k.decode().split("/")[0]])]
        second.restore(partition, items, NOW_S)
    after = Collected()
    for i in range(max(0, split - 200), len(raw), 300):
        after.add(second.process(raw[i:i + 300], NOW_S))
    after.add(second.tick(NOW_S + 86_400, snapshots=False))
    merged = Collected(minutes=before.minutes + after.minutes, summaries={**before.summaries, **after.summaries},
                       leads=before.leads + after.leads)
    # minute windows emitted before the crash may be emitted again by the replay: consumers upsert by key
    dedup = {(m["event_id"], m["window_start"]): m for m in merged.minutes}
    merged.minutes = list(dedup.values())
    compare(merged, raw)
