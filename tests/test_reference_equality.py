"""The streaming processor against the batch reference (tests/reference.py): summaries, minute windows, leads
and the /metrics event series, on random webinars (tests/webinars.py) and hand-written edge cases, across batch
sizes, partition counts, delivery orders within the lateness, duplicates, and a restart from persisted state
with redelivery."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from streams.ingest.decode import Rejection, decode_event, decode_interaction
from streams.outputs.metrics import exposition
from streams.partitioning import partition_for
from streams.processor import Processor, RawRecord, event_of_key
from streams.settings import Settings
from streams.testing import Collected, run_records
from tests.reference import Params, assert_same, classify, reference
from tests.webinars import NOW_S, SETTINGS, T0, TOPIC, Case, Shape, arrival, deliver, scenario, webinar
from tests.webinars import to_raw as kafka_records

PARAMS = Params.from_settings(SETTINGS)


# ---------------------------------------------------------------------------------------------- helpers
def to_raw(sim, partitions: int = 1) -> list[RawRecord]:
    """Kafka records of simulator output (streams.simulate SimRecords): partition by key, offsets per
    topic-partition, arrival order kept."""
    offsets: dict[tuple, int] = {}
    out = []
    for r in sim:
        tp = (TOPIC["event" if r.topic == "events" else "interaction"], partition_for(r.key, partitions))
        offsets[tp] = offsets.get(tp, -1) + 1
        out.append(RawRecord(tp[0], tp[1], offsets[tp], r.key, r.value))
    return out


def arrivals_of(raw: list[RawRecord]) -> list[tuple[str, dict]]:
    """The decodable records of Kafka records, in order (what the reference sees of them)."""
    out = []
    for r in raw:
        is_event = r.topic == SETTINGS.topic_events
        d = (decode_event if is_event else decode_interaction)(r.value, now_ms=NOW_S * 1000)
        if not isinstance(d, Rejection):
            out.append(("event" if is_event else "interaction", d))
    return out


def event_metrics(processor: Processor) -> dict[str, dict]:
    """/metrics event series per event_id: (sample name, sorted labels) -> value."""
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(exposition(processor).decode()):
        for s in family.samples:
            if "event_id" in s.labels and not s.name.startswith("livepulse_roi_"):  # ROI: tests/test_roi.py
                out.setdefault(s.labels["event_id"], {})[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def compare(got: Collected, arrivals: list[tuple[str, dict]], processor: Processor | None = None,
            params: Params = PARAMS) -> dict:
    """Every output of `got` equals the reference of `arrivals`; returns the reference results."""
    expected = reference(arrivals, params)
    assert set(got.summaries) == set(expected), "one summary per ended event"
    for event_id, result in expected.items():
        summary = got.summaries[event_id]
        assert_same(summary, result.summary, f"summary[{event_id}]")
        assert summary["total_dwell_seconds"] == result.summary["total_dwell_seconds"], "dwell exact to the ms"
        minutes = sorted((m for m in got.minutes if m["event_id"] == event_id), key=lambda m: m["window_start"])
        assert_same(minutes, result.minutes, f"minutes[{event_id}]")
        leads = {x["attendee_id"]: x for x in got.leads if x["event_id"] == event_id}
        assert len(leads) == sum(x["event_id"] == event_id for x in got.leads), "one lead per attendee"
        want = {x["attendee_id"]: x for x in result.leads}
        assert set(leads) == set(want), f"leads[{event_id}] attendees"
        for aid, lead in want.items():
            assert_same(leads[aid], lead, f"leads[{event_id}][{aid}]")
            assert leads[aid]["dwell_seconds"] == lead["dwell_seconds"], "dwell exact to the ms"
    if processor is not None:
        shown = event_metrics(processor)
        for event_id, result in expected.items():
            assert set(shown.get(event_id, {})) == set(result.metrics), f"metrics[{event_id}] series"
            for key, value in result.metrics.items():
                assert_same(shown[event_id][key], value, f"metrics[{event_id}]{key}")
        events = classify(arrivals, params).values()
        assert processor.counters.duplicates == sum(e.duplicates for e in events)
        assert processor.counters.late == sum(late for e in events for _, late in e.kept)
    return expected


def run(arrivals, *, partitions: int = 1, batch_size: int = 500, seed: int = 0, malformed_rate: float = 0.0,
        rfc3339_rate: float = 0.1) -> Collected:
    raw = kafka_records(arrivals, partitions, seed=seed, malformed_rate=malformed_rate, rfc3339_rate=rfc3339_rate)
    got = run_records(raw, SETTINGS, batch_size=batch_size, partitions=partitions, wall_start=NOW_S)
    assert not got.rekeyed, "records keyed by event_id stay on their partition"
    assert arrivals_of(raw) == arrivals, "decode gives back every record (RFC 3339 ts too) and drops the malformed"
    return got


def outputs(got: Collected) -> tuple:
    """Everything a consumer sees, order-insensitive where the order is not part of the contract."""
    minutes = sorted(got.minutes, key=lambda m: (m["event_id"], m["window_start"]))
    leads = sorted(got.leads, key=lambda x: (x["event_id"], x["attendee_id"]))
    return dict(sorted(got.summaries.items())), minutes, leads


# ---------------------------------------------------------------------------------------------- shapes
SHAPES = {
    "default": Shape(),
    "bigger, faulty": Shape(attendees=40, duration_s=1500, dup_rate=0.1, reorder_rate=0.6),
    "tiny": Shape(attendees=2, duration_s=120, no_shows=1, oddballs=False, extra_lifecycle=False),
    "one attendee": Shape(attendees=1, duration_s=300, no_shows=0, oddballs=False),
    "no registrations": Shape(register_rate=0.0, no_shows=0),
    "no started record": Shape(started=False),
    "everyone vanishes": Shape(vanish_rate=1.0, gap_rate=0.1, stay_rate=0.0),
    "big drop": Shape(attendees=30, drop_fraction=0.8),
    "really late records": Shape(late_rate=0.05),
    "ended runs ahead": Shape(ended_ahead_ms=120_000),
    "no key accounts": Shape(key_accounts=()),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_webinar_equals_the_reference(shape, seed):
    arrivals = scenario(seed, {"ev-1": SHAPES[shape]})
    got = run(arrivals, batch_size=[1, 7, 500][seed % 3], seed=seed, malformed_rate=0.01)
    compare(got, arrivals, got.processor)


@pytest.mark.parametrize("batch_size,partitions", [(1, 1), (7, 4), (500, 4), (500, 1)])
@pytest.mark.parametrize("seed", [11, 12])
def test_interleaved_webinars_any_batching_and_partitioning(seed, batch_size, partitions):
    shapes = {f"web-{i}": Shape(attendees=8 + 3 * i, duration_s=300 + 240 * i, started=i != 2,
                                late_rate=0.02 if i == 3 else 0.0) for i in range(6)}
    arrivals = scenario(seed, shapes)
    got = run(arrivals, batch_size=batch_size, partitions=partitions, seed=seed, malformed_rate=0.01)
    compare(got, arrivals, got.processor)


# ---------------------------------------------------------------------------------------------- edge cases
def _edge_cases() -> dict[str, Case]:
    c = {}
    c["leave at the same ms as the join"] = (Case().life("started", 0).i("a", "join", 10).i("a", "leave", 10)
                                             .life("ended", 300))
    c["join, leave same ms then nothing: times out"] = (Case().i("a", "join", 5).i("a", "leave", 5)
                                                        .i("b", "join", 6).i("b", "leave", 50).life("ended", 600))
    c["join after ended"] = (Case().life("started", 0).i("a", "join", 1).life("ended", 100).i("b", "join", 101)
                             .i("b", "chat", 102).i("a", "heartbeat", 110).i("c", "registration", 120))
    c["no registrations, no started record"] = (Case().i("a", "join", 3.5).i("b", "join", 61).i("a", "chat", 62)
                                                .i("b", "leave", 90).life("ended", 200))
    c["only registrations"] = Case().i("a", "registration", -3600).i("b", "registration", -60).life("ended", 0)
    c["only lifecycle"] = Case().life("scheduled", -86400, title="T").life("started", 0).life("ended", 180)
    c["ended record twice, second ignored"] = (Case().i("a", "join", 0).life("ended", 200).i("a", "heartbeat", 210)
                                               .life("ended", 100))
    c["ended arrives late: E = watermark"] = (Case().i("a", "join", 0).i("a", "heartbeat", 100)
                                              .i("a", "heartbeat", 130).life("ended", 40))
    c["ended exactly at a window start"] = (Case().i("a", "join", 0).i("b", "join", 119.999).life("ended", 120)
                                            .i("c", "join", 120))
    c["late records count in totals only"] = (Case().life("started", 0).i("a", "registration", 1)
                                              .i("a", "join", 100).i("b", "join", 0.5).i("b", "chat", 60)
                                              .i("c", "poll_vote", 10, poll_id="p1", key_account=True)
                                              .i("a", "poll_vote", 101, poll_id="p2").life("ended", 200))
    c["timeout in the gap and return without join"] = (Case().i("a", "join", 0).i("a", "heartbeat", 30)
                                                       .i("a", "heartbeat", 150).i("a", "chat", 170)
                                                       .i("a", "heartbeat", 300).life("ended", 400))
    c["timeout exactly at idle"] = Case().i("a", "join", 0).i("a", "heartbeat", 120).life("ended", 240)
    c["still present at the end, ended within idle"] = (Case().i("a", "join", 0).i("a", "heartbeat", 100)
                                                        .life("ended", 219.999))
    c["duplicates: same id re-sent"] = (Case().i("a", "join", 0, rid="x").i("a", "join", 0, rid="x")
                                        .i("a", "chat", 5, rid="y").i("a", "chat", 5, rid="y")
                                        .i("a", "leave", 20).life("ended", 60))
    c["key account by the event's list, announced late"] = (Case().i("a", "join", 0, account_id="acme")
                                                             .i("b", "join", 1, account_id="hooli")
                                                             .life("started", 2, key_accounts=["acme"])
                                                             .life("ended", 100, key_accounts=["hooli"]))
    c["walk-in and registered no-show"] = (Case().i("a", "registration", -100, channel="email")
                                           .i("b", "registration", -50).i("c", "join", 0).i("b", "leave", 10)
                                           .life("ended", 30))
    c["two events interleaved, same attendee and ids"] = (Case().i("a", "join", 0, "e1", rid="1")
                                                          .i("a", "join", 0, "e2", rid="1")
                                                          .i("a", "leave", 30, "e1", rid="2")
                                                          .life("ended", 40, "e1").life("ended", 50, "e2"))
    c["started later than the first join"] = (Case().i("a", "join", -200).i("b", "join", 0).life("started", 10)
                                              .life("started", 5).life("ended", 100))
    c["reconnect at the same ms"] = (Case().i("a", "join", 0).i("a", "join", 50).i("a", "leave", 50)
                                     .i("a", "leave", 80).life("ended", 100))
    c["started, minutes of registrations only, then a join"] = (Case().life("started", 0)
                                                                .i("r", "registration", 30)
                                                                .i("r", "registration", 200)
                                                                .i("a", "join", 230).life("ended", 400))
    c["polls seen by non-attendees"] = (Case().i("a", "join", 0).i("a", "poll_vote", 1, poll_id="p1")
                                        .i("b", "poll_vote", 2, poll_id="p2").i("b", "cta_click", 3, cta_id="x")
                                        .life("ended", 100))
    c["same id from another attendee is a duplicate"] = (Case().i("a", "join", 0, rid="x").i("b", "join", 1, rid="x")
                                                         .i("b", "chat", 2, rid="y").life("ended", 100))
    c["account id changes: any key account counts"] = (Case().i("a", "join", 0, account_id="hooli")
                                                       .i("a", "chat", 1, account_id="acme")
                                                       .life("ended", 100, key_accounts=["acme"]))
    c["channel from the first registration that has one"] = (Case().i("a", "registration", -100)
                                                             .i("a", "registration", -50, channel="partner")
                                                             .i("a", "join", 0).life("ended", 100))
    c["channels: empty and reserved names, chat-only walk-in"] = (
        Case().i("a", "registration", -100, channel="").i("b", "registration", -90, channel="other")
        .i("c", "registration", -80, channel="walk_in").i("d", "registration", -70, channel="email")
        .i("a", "join", 0).i("c", "join", 1).i("d", "join", 2).i("d", "chat", 3).i("e", "chat", 4)
        .i("f", "join", 5).i("f", "leave", 50).life("ended", 100))
    c["channel costs: the last given replace the earlier"] = (
        Case().life("scheduled", -86400, cost=900, currency="USD", channel_costs={"email": 100, "ads": 40})
        .i("a", "registration", -100, channel="email").i("b", "registration", -90, channel="partner")
        .i("a", "join", 0).i("b", "join", 1).i("c", "join", 2)
        .life("started", 3, channel_costs={"partner": 50.5, "walk_in": 0, "other": 7}).life("ended", 100))
    return c


EDGE_CASES = _edge_cases()


@pytest.mark.parametrize("name", EDGE_CASES)
@pytest.mark.parametrize("batch_size", [1, 500])
def test_edge_case_equals_the_reference(name, batch_size):
    arrivals = EDGE_CASES[name].arrivals
    got = run(arrivals, batch_size=batch_size, rfc3339_rate=0.0)
    compare(got, arrivals, got.processor)


def test_an_id_is_new_again_once_the_horizon_has_passed():
    case = (Case().i("a", "join", 0, rid="x").i("a", "heartbeat", 100).i("b", "join", 300)
            .i("b", "heartbeat", 400).i("b", "heartbeat", 500).i("b", "heartbeat", 600.001)
            .i("c", "chat", 600.5, rid="x")  # 600.001 s after "x" was first seen: forgotten, a new record
            .i("c", "chat", 601, rid="x")  # and now a duplicate again
            .life("ended", 700))
    for batch_size in (1, 3, 500):
        got = run(case.arrivals, batch_size=batch_size, rfc3339_rate=0.0)
        compare(got, case.arrivals, got.processor)
        assert got.summaries["ev"]["interactions"]["chat"] == 1


# ---------------------------------------------------------------------------------------------- properties
def _base(seed: int) -> tuple[random.Random, dict[str, list]]:
    """Histories of two small events (true order), from a seed."""
    rnd = random.Random(seed)
    shapes = {"p-1": Shape(attendees=6, duration_s=420, dup_rate=0.0, reorder_rate=0.0),
              "p-2": Shape(attendees=4, duration_s=300, started=False, dup_rate=0.0, reorder_rate=0.0)}
    return rnd, {e: webinar(rnd, e, T0 + rnd.randrange(120_000), shape) for e, shape in shapes.items()}


def _delivered(histories, rnd, **shape) -> list[tuple[str, dict]]:
    return arrival(*(deliver(h, rnd, Shape(**shape)) for h in histories.values()))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from([1, 7, 1000]))
def test_permuting_within_the_lateness_changes_nothing(seed, order_seed, batch_size):
    rnd, histories = _base(seed)
    in_order = _delivered(histories, rnd, dup_rate=0.0, reorder_rate=0.0)
    shuffled = _delivered(histories, random.Random(order_seed), dup_rate=0.0, reorder_rate=0.7)
    a = run(in_order, batch_size=batch_size, seed=seed)
    b = run(shuffled, batch_size=batch_size, seed=order_seed)
    compare(b, shuffled, b.processor)
    assert_same(outputs(b), outputs(a))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from([1, 7, 1000]))
def test_duplicates_change_nothing(seed, dup_seed, batch_size):
    rnd, histories = _base(seed)
    clean = _delivered(histories, rnd, dup_rate=0.0, reorder_rate=0.3)
    # re-send random interactions once or twice, right away or a few records later (well within the horizon)
    rnd = random.Random(dup_seed)
    noisy = list(clean)
    for i in sorted(rnd.sample(range(len(clean)), len(clean) // 5), reverse=True):
        kind, r = clean[i]
        if kind == "interaction":
            for _ in range(rnd.choice((1, 1, 2))):
                k = rnd.randrange(5)
                if any(x["ts"] - r["ts"] > 60_000 for _, x in clean[i + 1:i + 1 + k]):
                    k = 0  # (a pre-event registration: the next records may be hours later, beyond the horizon)
                noisy.insert(i + 1 + k, (kind, dict(r)))
    a = run(clean, batch_size=batch_size)
    b = run(noisy, batch_size=batch_size)
    compare(b, noisy, b.processor)
    assert_same(outputs(b), outputs(a))
    assert b.processor.counters.duplicates == len(noisy) - len(clean)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([1, 4]))
def test_batches_of_one_and_of_a_thousand_agree(seed, partitions):
    arrivals = scenario(seed, {f"b-{i}": Shape(attendees=5, duration_s=300, late_rate=0.03) for i in range(3)})
    one = run(arrivals, batch_size=1, partitions=partitions, seed=seed)
    many = run(arrivals, batch_size=1000, partitions=partitions, seed=seed)
    compare(many, arrivals, many.processor)
    assert_same(outputs(one), outputs(many))
    assert event_metrics(one.processor) == event_metrics(many.processor)


# ---------------------------------------------------------------------------------------------- restart
@pytest.mark.parametrize("cut", [0.2, 0.5, 0.85])
@pytest.mark.parametrize("batch_size", [7, 300])
@pytest.mark.parametrize("redeliver", [50, "all"])
def test_restart_from_persisted_state_with_redelivery_changes_nothing(cut, batch_size, redeliver):
    partitions = 2
    arrivals = scenario(int(cut * 100) + batch_size, {f"r-{i}": Shape(attendees=10, duration_s=600,
                                                                      late_rate=0.02) for i in range(4)})
    raw = kafka_records(arrivals, partitions, seed=5)
    split = int(len(raw) * cut)
    first = Processor(SETTINGS, partitions=partitions)
    before = Collected()
    for i in range(0, split, batch_size):
        before.add(first.process(raw[i:min(i + batch_size, split)], NOW_S))
    # a new worker restores each partition from the changelog, then the last 50 records (or all: nothing was
    # committed) come again
    second = Processor(SETTINGS, partitions=partitions)
    for partition in range(partitions):
        items = [(k, v) for k, v in before.state.items()
                 if first.event_partition[event_of_key(k)] == partition]
        second.restore(partition, items, NOW_S)
    after = Collected()
    rest = raw[max(0, split - 50):] if redeliver == 50 else raw
    for i in range(0, len(rest), batch_size):
        after.add(second.process(rest[i:i + batch_size], NOW_S))
    after.add(second.tick(NOW_S + 86_400, snapshots=False))
    # windows emitted before the crash may come again from the replay: consumers upsert by (event, window)
    windows: dict[tuple, dict] = {}
    for m in before.minutes + after.minutes:
        key = (m["event_id"], m["window_start"])
        assert windows.setdefault(key, m) == m, f"window {key} emitted twice with different content"
    merged = Collected(minutes=list(windows.values()), summaries={**before.summaries, **after.summaries},
                       leads=before.leads + after.leads)
    expected = compare(merged, arrivals_of(raw))
    shown = event_metrics(second)
    for event_id, result in expected.items():
        for key, value in result.metrics.items():
            assert_same(shown[event_id][key], value, f"metrics[{event_id}]{key}")


# ---------------------------------------------------------------------------------------------- channels
@pytest.mark.parametrize("cap", [1, 2, 20])
@pytest.mark.parametrize("seed", [5, 6])
def test_channels_beyond_the_cap_are_folded_into_other(seed, cap):
    arrivals = scenario(seed, {"ch-1": Shape(attendees=40, no_shows=6), "ch-2": Shape(attendees=25)})
    settings = Settings(max_channels_per_event=cap)
    raw = kafka_records(arrivals, 2, seed=seed)
    got = run_records(raw, settings, batch_size=97, partitions=2, wall_start=NOW_S)
    expected = compare(got, arrivals, got.processor, params=replace(PARAMS, max_channels=cap))
    reserved = {"walk_in", "unknown", "other"}
    for event_id, result in expected.items():
        records = [r for _, r in arrivals if r["event_id"] == event_id]
        costed = {c for r in records for c in r.get("channel_costs", ())} - reserved
        distinct = costed | {r.get("channel") for r in records if r["type"] == "registration"} - {None, ""} - reserved
        names = [c["channel"] for c in result.summary["channels"]]
        named = {n for n in names if n not in reserved}
        assert len(named) == min(cap, len(distinct)) and ("other" in names) == (cap < len(distinct)), names
        assert named >= costed or len(named) == cap, "channels with a cost are kept first"
        assert sum(c["registrations"] for c in result.summary["channels"]) == result.summary["registrations"]
        assert sum(c["attendees"] for c in result.summary["channels"]) == result.summary["unique_attendees"]


# ---------------------------------------------------------------------------------------------- the simulator
@pytest.mark.parametrize("seed", [1, 2])
def test_simulated_webinar_equals_the_reference(seed):
    """The realistic simulator's output (bounded duplicates/reordering, malformed records) as well."""
    from streams.simulate.scenario import ScenarioConfig, generate

    raw = to_raw(generate(ScenarioConfig(seed=seed, registrants=80, duration_s=900)), 2)
    got = run_records(raw, SETTINGS, batch_size=250, partitions=2, wall_start=NOW_S)
    compare(got, arrivals_of(raw), got.processor)


@pytest.mark.parametrize("checkpoint_every", [1, 4])
@pytest.mark.parametrize("horizon_s", [600, 45])
@pytest.mark.parametrize("seed", [20, 24, 30, 31, 32, 33])
def test_restart_after_a_partly_persisted_batch(seed, horizon_s, checkpoint_every):
    """A crash while a checkpoint's state records are written (after every batch, or every 4th: the worker's
    checkpoint interval): any prefix of them reached the changelog (attendee records newer than the event record),
    and outputs of the batches since the previous checkpoint were sent. The replay from the committed offset (the
    previous checkpoint's) must still equal the reference. The short de-duplication horizon, re-sends and really
    late records make ids leave the memory within a batch."""
    rnd = random.Random(seed)
    settings = SETTINGS.model_copy(update={"dedup_horizon_s": horizon_s})
    shape = Shape(attendees=10, duration_s=600) if horizon_s == 600 else \
        Shape(attendees=10, duration_s=600, dup_rate=0.15, late_rate=0.05)
    arrivals = scenario(seed, {f"r-{i}": shape for i in range(2)})
    raw = kafka_records(arrivals, 1, seed=5)
    bs = rnd.choice([7, 50, 100] if checkpoint_every == 1 else [7, 20, 25])
    span = bs * checkpoint_every  # input between two checkpoints
    split = rnd.randrange(span, len(raw))
    split -= split % span
    first, before = Processor(settings, partitions=1), Collected()
    for n, i in enumerate(range(0, split, bs)):
        out = first.process(raw[i:i + bs], NOW_S, persist=n % checkpoint_every == checkpoint_every - 1)
        if i + bs >= split:  # the worker dies while this checkpoint's state records are being produced
            out.state = out.state[:rnd.randrange(len(out.state) + 1)]
        before.add(out)
    second, after = Processor(settings, partitions=1), Collected()
    second.restore(0, list(before.state.items()), NOW_S)
    rest = raw[max(0, split - span - rnd.randrange(100)):]
    for n, i in enumerate(range(0, len(rest), bs)):
        after.add(second.process(rest[i:i + bs], NOW_S, persist=n % checkpoint_every == checkpoint_every - 1))
    after.add(second.tick(NOW_S + 86_400, snapshots=False))
    windows = {(m["event_id"], m["window_start"]): m for m in before.minutes + after.minutes}
    compare(Collected(minutes=list(windows.values()), summaries={**before.summaries, **after.summaries},
                      leads=after.leads), arrivals_of(raw), params=Params.from_settings(settings))

# ---------------------------------------------------------------------------------------------- join_leave presence
def _join_leave(arrivals: list[tuple[str, dict]], event_ids: set[str] | None = None) -> list[tuple[str, dict]]:
    """The same arrivals with every lifecycle record of `event_ids` (default: all) in join_leave presence, as a
    source without heartbeats (webhooks of a webinar platform) sends them."""
    return [(kind, {**r, "presence": "join_leave"} if kind == "event" and (event_ids is None or r["event_id"]
                                                                           in event_ids) else r)
            for kind, r in arrivals]


def _join_leave_cases() -> dict[str, Case]:
    jl = {"presence": "join_leave"}
    c = {}
    c["silent for longer than the idle timeout: still present"] = (
        Case().life("scheduled", -3600, **jl).life("started", 0, **jl).i("a", "join", 0).i("b", "join", 5)
        .i("a", "leave", 900).life("ended", 1200, **jl))
    c["chat without a join makes nobody present"] = (Case().life("started", 0, **jl).i("a", "chat", 10)
                                                    .i("a", "chat", 20).i("b", "join", 30).life("ended", 300, **jl))
    c["a chat at the same ms as the leave does not reopen"] = (Case().life("started", 0, **jl).i("a", "join", 0)
                                                               .i("a", "leave", 100).i("a", "chat", 100)
                                                               .life("ended", 600, **jl))
    c["heartbeats are not signs of life"] = (Case().life("started", 0, **jl).i("a", "heartbeat", 5)
                                             .i("a", "join", 10).i("a", "leave", 40).i("a", "heartbeat", 70)
                                             .life("ended", 400, **jl))
    c["leave, rejoin, present until the end"] = (Case().life("started", 0, **jl).i("a", "join", 0)
                                                 .i("a", "leave", 200).i("a", "join", 500).i("b", "leave", 10)
                                                 .life("ended", 1000, **jl).i("a", "leave", 1005))
    c["mode on the scheduled record only"] = (Case().life("scheduled", -60, **jl).i("a", "registration", -50)
                                              .i("a", "join", 0).life("started", 0).life("ended", 700))
    c["two events: one join_leave, one heartbeat"] = (Case().life("started", 0, "z", **jl).i("a", "join", 0, "z")
                                                      .i("a", "join", 0, "h").i("a", "heartbeat", 30, "h")
                                                      .life("ended", 500, "z").life("ended", 500, "h"))
    c["ended arrives late: E = watermark"] = (Case().life("started", 0, **jl).i("a", "join", 0)
                                              .i("b", "join", 100).i("b", "chat", 400).life("ended", 40, **jl))
    c["the mode arrives after the first joins, within the lateness"] = (
        Case().i("a", "join", 0).i("a", "chat", 5).i("b", "chat", 6).i("c", "join", 20).life("started", 1, **jl)
        .i("c", "leave", 300).life("ended", 600, **jl))
    return c


JOIN_LEAVE_CASES = _join_leave_cases()


@pytest.mark.parametrize("name", JOIN_LEAVE_CASES)
@pytest.mark.parametrize("batch_size", [1, 500])
def test_join_leave_edge_case_equals_the_reference(name, batch_size):
    arrivals = JOIN_LEAVE_CASES[name].arrivals
    got = run(arrivals, batch_size=batch_size, rfc3339_rate=0.0)
    compare(got, arrivals, got.processor)


def test_join_leave_presence_is_not_the_heartbeat_one():
    """The mode changes the figures (else the cases above would prove nothing): one silent attendee."""
    case = Case().life("started", 0).i("a", "join", 0).i("a", "leave", 900).life("ended", 1200)
    heartbeat = run(case.arrivals, rfc3339_rate=0.0)
    join_leave = run(_join_leave(case.arrivals), rfc3339_rate=0.0)
    assert heartbeat.summaries["ev"]["total_dwell_seconds"] == 0.0  # timed out: dwell ends at the last sign of life
    assert join_leave.summaries["ev"]["total_dwell_seconds"] == 900.0  # join to leave


@pytest.mark.parametrize("shape", ["default", "bigger, faulty", "everyone vanishes", "really late records",
                                   "ended runs ahead", "no started record"])
@pytest.mark.parametrize("seed", [4, 5])
def test_join_leave_webinar_equals_the_reference(shape, seed):
    arrivals = _join_leave(scenario(seed, {"jl-1": SHAPES[shape], "hb-1": SHAPES["default"]}), {"jl-1"})
    got = run(arrivals, batch_size=[1, 7, 500][seed % 3], seed=seed, malformed_rate=0.01)
    compare(got, arrivals, got.processor)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from([1, 7, 1000]))
def test_join_leave_permuted_and_duplicated_changes_nothing(seed, order_seed, batch_size):
    rnd, histories = _base(seed)
    histories = {e: _join_leave(h) for e, h in histories.items()}
    in_order = _delivered(histories, rnd, dup_rate=0.0, reorder_rate=0.0)
    noisy = _delivered(histories, random.Random(order_seed), dup_rate=0.2, reorder_rate=0.7)
    a = run(in_order, batch_size=batch_size, seed=seed)
    b = run(noisy, batch_size=batch_size, seed=order_seed)
    compare(b, noisy, b.processor)
    assert_same(outputs(b), outputs(a))


@pytest.mark.parametrize("cut", [0.3, 0.7])
@pytest.mark.parametrize("batch_size", [7, 300])
def test_join_leave_restart_from_persisted_state(cut, batch_size):
    """The mode is event metadata: it comes back with the persisted event record."""
    partitions = 2
    arrivals = _join_leave(scenario(int(cut * 10) + batch_size, {f"j-{i}": Shape(attendees=10, duration_s=600)
                                                                 for i in range(3)}))
    raw = kafka_records(arrivals, partitions, seed=3)
    split = int(len(raw) * cut)
    first, before = Processor(SETTINGS, partitions=partitions), Collected()
    for i in range(0, split, batch_size):
        before.add(first.process(raw[i:min(i + batch_size, split)], NOW_S))
    second, after = Processor(SETTINGS, partitions=partitions), Collected()
    for partition in range(partitions):
        second.restore(partition, [(k, v) for k, v in before.state.items()
                                   if first.event_partition[event_of_key(k)] == partition], NOW_S)
    assert all(ev.join_leave for ev in second.events.values())
    rest = raw[max(0, split - 50):]
    for i in range(0, len(rest), batch_size):
        after.add(second.process(rest[i:i + batch_size], NOW_S))
    after.add(second.tick(NOW_S + 86_400, snapshots=False))
    windows = {(m["event_id"], m["window_start"]): m for m in before.minutes + after.minutes}
    compare(Collected(minutes=list(windows.values()), summaries={**before.summaries, **after.summaries},
                      leads=before.leads + after.leads), arrivals_of(raw))
