"""Simulated webinars through the embedded broker and real worker processes: summaries, minute windows, leads
and the final /metrics equal the batch reference exactly -- also when the worker is killed mid-event."""

from __future__ import annotations

import asyncio
import signal
import time

import orjson
import pytest

from streams.domain.event import SESSION_BUCKETS
from streams.ingest.contracts import validate_output
from streams.simulate.scenario import concurrent_events, generate_many
from tests.integration.harness import (
    Pipeline,
    WorkerProcess,
    consume,
    decoded,
    parse_metrics,
    produce,
    wait_until,
)
from tests.reference import Params, assert_same, reference
from tests.test_reference_equality import arrivals_of, to_raw

pytestmark = pytest.mark.integration


def scenario(seed: int, events: int, partitions: int):
    """Simulated webinars cut at their `ended` ts, plus one sentinel heartbeat per event at ended + lateness.

    Records after `ended` would race the summary (the reference assumes none arrive after it); the sentinel moves
    each event's clock to exactly ended + allowed lateness, so the summary is due without waiting for wall time.
    """
    cfgs = concurrent_events(seed, events, registrants=70, duration_s=600)
    ends = {c.eid: c.start_ms + c.duration_s * 1000 for c in cfgs}
    sim = [r for r in generate_many(cfgs) if r.topic == "events" or r.ts <= ends[r.key.decode()]]
    raw = to_raw(sim, partitions)
    sentinels = [(eid.encode(), orjson.dumps({"id": f"sentinel-{eid}", "event_id": eid, "attendee_id": "sentinel",
                                               "type": "heartbeat", "ts": end + 30_000}))
                 for eid, end in ends.items()]
    return raw, sentinels


def expected_of(raw, sentinels, settings):
    from streams.processor import RawRecord

    tail = [RawRecord(settings.topic_interactions, 0, 0, k, v) for k, v in sentinels]
    return reference(arrivals_of(raw + tail), Params())


def feed(pipe: Pipeline, records) -> None:
    s = pipe.settings
    names = {"interactions": s.topic_interactions, "events": s.topic_events}
    asyncio.run(produce(pipe.broker, [(names[r.topic], r.key, r.value) for r in records]))


def processed(worker: WorkerProcess) -> float:
    return sum(v for (name, _), v in worker.metrics().items() if name == "livepulse_records_processed_total")


def collect_outputs(pipe: Pipeline, n_events: int) -> dict[str, list[dict]]:
    s = pipe.settings
    topics = [s.topic_summary, s.topic_leads, s.topic_minute]
    got = asyncio.run(consume(pipe.broker, topics, until=lambda r: len(r[s.topic_summary]) >= n_events,
                              timeout=120))
    time.sleep(1.0)  # leads follow their summary in the same batch of sends; read once more to get them all
    got = asyncio.run(consume(pipe.broker, topics, until=lambda r: len(r[s.topic_summary]) >= n_events))
    return {t: decoded(v) for t, v in got.items()}


def check_topics(pipe: Pipeline, outputs: dict[str, list[dict]], expected) -> None:
    """Upserts by key (the last record per key wins; a replay may repeat one with the same content) follow their
    schemas and equal the reference: summaries, leads, minute windows."""
    s = pipe.settings
    summaries = {m["event_id"]: m for m in outputs[s.topic_summary]}
    assert set(summaries) == set(expected), "one summary per ended event"
    leads = {(m["event_id"], m["attendee_id"]): m for m in outputs[s.topic_leads]}
    minutes = {(m["event_id"], m["window_start"]): m for m in outputs[s.topic_minute]}
    for kind, records in (("summary", summaries.values()), ("lead", leads.values()), ("minute", minutes.values())):
        for record in records:
            validate_output(kind, record)
    for event_id, result in expected.items():
        assert_same(summaries[event_id], result.summary, f"summary[{event_id}]")
        assert_same(sorted((m for k, m in leads.items() if k[0] == event_id), key=lambda m: m["attendee_id"]),
                    result.leads, f"leads[{event_id}]")
        assert_same(sorted((m for k, m in minutes.items() if k[0] == event_id), key=lambda m: m["window_start"]),
                    result.minutes, f"minutes[{event_id}]")


def check(pipe: Pipeline, outputs, expected, workers: list[WorkerProcess]) -> None:
    check_topics(pipe, outputs, expected)
    # /metrics: summed over the workers (each exports only the events it owns) they show the final figures
    totals: dict[tuple, float] = {}
    # A scrape restricted to some sample names (?name[]=...) holds just those, equal to the full scrape's (for the
    # ended events: a live one's dwell may move between the two scrapes).
    names = ["livepulse_interactions_total", "livepulse_dwell_seconds_total"]

    def of_ended_events(samples: dict) -> dict:
        return {k: v for k, v in samples.items() if k[0] in names and dict(k[1]).get("event_id") in expected}

    for w in workers:
        everything = w.metrics()
        restricted = parse_metrics(w.metrics_text(names))
        assert restricted and {k[0] for k in restricted} <= set(names)
        assert of_ended_events(restricted) and of_ended_events(restricted) == of_ended_events(everything)
        for key, value in everything.items():
            if dict(key[1]).get("event_id"):
                totals[key] = totals.get(key, 0) + value
    for event_id, result in expected.items():
        summary = result.summary

        def metric(name, event_id=event_id, **labels):
            return totals.get((name, tuple(sorted({"event_id": event_id, **labels}.items()))))

        assert metric("livepulse_attendees_peak") == summary["attendees_peak"]
        assert metric("livepulse_unique_attendees") == summary["unique_attendees"]
        assert metric("livepulse_registrations") == summary["registrations"]
        assert metric("livepulse_key_account_attendees") == summary["key_account_attendees"]
        assert metric("livepulse_attendance_ratio") == pytest.approx(summary["attendance_rate"], rel=1e-9)
        assert metric("livepulse_engagement_score") == pytest.approx(summary["engagement_score"], rel=1e-9)
        assert metric("livepulse_dwell_seconds_total") == pytest.approx(summary["total_dwell_seconds"], abs=1e-6)
        for t, n in summary["interactions"].items():
            assert metric("livepulse_interactions_total", type=t) == n, t
        durations = [(dwell_end - start) / 1000 for _, start, dwell_end, _, _ in result.sessions]
        assert metric("livepulse_session_duration_seconds_count") == len(durations)
        assert metric("livepulse_session_duration_seconds_sum") == pytest.approx(sum(durations), abs=1e-6)
        for bound in SESSION_BUCKETS:
            le = str(float(bound))
            assert metric("livepulse_session_duration_seconds_bucket", le=le) == sum(d <= bound for d in durations)


def test_simulated_webinars_equal_the_reference(broker, tmp_path):
    pipe = Pipeline(broker, tmp_path, partitions=3)
    raw, sentinels = scenario(seed=21, events=3, partitions=3)
    expected = expected_of(raw, sentinels, pipe.settings)
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready()
        feed(pipe, _as_sim(raw))
        asyncio.run(produce(broker, [(pipe.settings.topic_interactions, k, v) for k, v in sentinels]))
        outputs = collect_outputs(pipe, len(expected))
        check(pipe, outputs, expected, [worker])
    finally:
        worker.stop()


def _as_sim(raw):
    from streams.simulate.scenario import SimRecord

    return [SimRecord("events" if r.topic.endswith(".events") else "interactions", r.key, r.value, 0) for r in raw]


@pytest.mark.parametrize(("store", "static", "checkpoint_s"),
                         [("rocksdb", False, "0"), ("memory", False, "0"), ("rocksdb", True, "0"), ("rocksdb", False, "1")],
                         ids=["rocksdb", "memory", "rocksdb-static-membership", "rocksdb-checkpoint-every-second"])
def test_worker_killed_mid_event_changes_no_final_number(broker, tmp_path, store, static, checkpoint_s):
    """kill -9 mid-stream and restart on the same data dir; with LIVEPULSE_GROUP_INSTANCE_ID the restarted worker
    takes its partitions back without waiting out the dead member's session. Checkpoints after every poll (the
    default) or every second (the kill lands between two: the input since the last is read again)."""
    env = {"LIVEPULSE_STORE": store, "LIVEPULSE_CHECKPOINT_INTERVAL_S": checkpoint_s} | \
        ({"LIVEPULSE_GROUP_INSTANCE_ID": "w1"} if static else {})
    pipe = Pipeline(broker, tmp_path, partitions=2, extra_env=env)
    raw, sentinels = scenario(seed=33, events=2, partitions=2)
    expected = expected_of(raw, sentinels, pipe.settings)
    sim = _as_sim(raw)
    half = len(sim) // 2
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready()
        feed(pipe, sim[:half])
        wait_until(lambda: processed(worker) >= half * 0.6, timeout=60, what="the first half being processed")
        worker.stop(signal.SIGKILL)  # mid-stream: some of the first half processed, nothing committed cleanly
        t0 = time.monotonic()
        worker = WorkerProcess(pipe, name="w1").start()  # same name: same data dir (RocksDB files survive)
        worker.wait_ready()
        recovery = time.monotonic() - t0
        feed(pipe, sim[half:])
        asyncio.run(produce(broker, [(pipe.settings.topic_interactions, k, v) for k, v in sentinels]))
        outputs = collect_outputs(pipe, len(expected))
        check(pipe, outputs, expected, [worker])
        if static:  # the instance id reached the group protocol (the broker derives the member id from it)
            assert "with member_id w1-" in worker.log_path.read_text(errors="replace"), worker.log_tail()
        print(f"store={store} static={static}: restarted worker healthy again after {recovery:.1f} s")
    finally:
        worker.stop()
