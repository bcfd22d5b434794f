"""A worker simply slower than its input (docs/operations.md "Slow consumers"): it shows how far behind it is and
loses nothing.

One real worker on the embedded broker gets a backlog of ~28,000 simulated webinar records -- over a hundred of
its (deliberately small) batches -- produced as fast as the broker takes them. While it works, /metrics shows the
backlog in `livepulse_consumer_lag_records`; once it has caught up the gauge is back to 0, the worker never had to
leave or rejoin its group, and every output equals the batch reference (nothing lost, nothing counted twice).
Nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.error
from typing import Self

import orjson
import pytest

from streams.app import input_topics
from streams.simulate.scenario import concurrent_events, generate_many
from tests.integration.harness import Pipeline, WorkerProcess, produce, wait_until
from tests.integration.test_worker_reference import (
    _as_sim,
    check,
    collect_outputs,
    expected_of,
    feed,
)
from tests.test_reference_equality import to_raw

pytestmark = pytest.mark.integration

BATCH = 200  # records per batch: the backlog is ~140 batches, so the worker is slower than the producer
LAG = "livepulse_consumer_lag_records"


def backlog(seed: int, events: int, registrants: int, partitions: int):
    """Like test_worker_reference.scenario, bigger: webinars cut at their `ended`, plus one sentinel heartbeat per
    event at ended + allowed lateness (its summary is then due without waiting for wall time)."""
    cfgs = concurrent_events(seed, events, registrants=registrants, duration_s=600)
    ends = {c.eid: c.start_ms + c.duration_s * 1000 for c in cfgs}
    sim = [r for r in generate_many(cfgs) if r.topic == "events" or r.ts <= ends[r.key.decode()]]
    sentinels = [(eid.encode(), orjson.dumps({"id": f"sentinel-{eid}", "event_id": eid, "attendee_id": "sentinel",
                                               "type": "heartbeat", "ts": end + 30_000}))
                 for eid, end in ends.items()]
    return to_raw(sim, partitions), sentinels


class Scraper:
    """Scrapes the worker's /metrics every 0.1 s in a thread while the test produces: (lag by topic, records
    processed from the fed topics) per scrape."""

    def __init__(self, worker: WorkerProcess, fed: set[str]) -> None:
        self.worker = worker
        self.fed = fed
        self.samples: list[tuple[dict[str, float], float]] = []
        self.errors: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def scrape(self) -> tuple[dict[str, float], float]:
        metrics = self.worker.metrics()
        lag = {dict(labels)["topic"]: v for (name, labels), v in metrics.items() if name == LAG}
        processed = sum(v for (name, labels), v in metrics.items()
                        if name == "livepulse_records_processed_total" and dict(labels)["topic"] in self.fed)
        return lag, processed

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.samples.append(self.scrape())
            except (urllib.error.URLError, OSError) as exc:
                self.errors.append(repr(exc))
            self.stopped.wait(0.1)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(10)


def test_a_worker_slower_than_its_input_shows_its_lag_and_loses_nothing(broker, tmp_path, record_property):
    partitions = 4
    pipe = Pipeline(broker, tmp_path, partitions=partitions, extra_env={"LIVEPULSE_BATCH_MAX_RECORDS": str(BATCH)})
    s = pipe.settings
    raw, sentinels = backlog(seed=7, events=8, registrants=400, partitions=partitions)
    expected = expected_of(raw, sentinels, s)
    total = len(raw) + len(sentinels)
    assert total > 100 * BATCH
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready()
        inputs = set(input_topics(s))  # every topic the worker consumes
        fed = {s.topic_interactions, s.topic_events}
        with Scraper(worker, fed) as scraper:
            lag, _ = wait_until(scraper.scrape, what="a first scrape")
            assert set(lag) == inputs and not any(lag.values()), f"idle worker: every input topic at 0, got {lag}"
            t0 = time.monotonic()
            feed(pipe, _as_sim(raw))
            asyncio.run(produce(broker, [(s.topic_interactions, k, v) for k, v in sentinels]))
            produced_s = time.monotonic() - t0

            def caught_up():
                lag, processed = scraper.scrape()
                return (lag, processed) if processed == total and not any(lag.values()) else None

            final_lag, _ = wait_until(caught_up, timeout=90, interval=0.2,
                                      what=f"all {total} records processed and the lag gauge back to 0")
            caught_up_s = time.monotonic() - t0
        assert not scraper.errors, f"/metrics did not answer while the worker was busy: {scraper.errors[:3]}"
        peak = max(sum(lag.values()) for lag, _ in scraper.samples)
        behind = [(lag, processed) for lag, processed in scraper.samples if any(lag.values())]
        record_property("records", total)
        record_property("produced_s", round(produced_s, 1))
        record_property("caught_up_s", round(caught_up_s, 1))
        record_property("peak_lag_records", peak)
        print(f"[slow-consumer] {total} records produced in {produced_s:.1f} s, processed in {caught_up_s:.1f} s; "
              f"peak lag {peak:.0f} records; {len(behind)} of {len(scraper.samples)} scrapes showed a lag")
        assert behind, f"the worker never showed a lag ({len(scraper.samples)} scrapes while {total} records went in)"
        assert all(set(lag) == inputs for lag, _ in scraper.samples), "the gauge is labelled by input topic only"
        assert {t for lag, _ in behind for t, v in lag.items() if v} <= fed
        # the backlog shown never exceeds what had not been processed yet, give or take the batch being persisted
        # (already in the processed counter, not yet measured: a partition's lag is measured after its batch)
        assert all(sum(lag.values()) <= total - processed + BATCH for lag, processed in behind), \
            [(sum(lag.values()), total - processed) for lag, processed in behind]
        assert final_lag == dict.fromkeys(inputs, 0.0)

        # It kept up without leaving its group: one assignment (the start's), nothing deferred or replayed.
        log = worker.log_path.read_text(errors="replace")
        recoveries = re.findall(r"partitions \[[\d, ]*\]: restored \d+ events", log)
        assert recoveries == ["partitions [0, 1, 2, 3]: restored 0 events"], \
            f"the worker was assigned its partitions more than once (a rebalance): {recoveries}"
        assert log.count("Setting newly assigned partitions") == 1, "the consumer group rebalanced"
        assert worker.proc.poll() is None, f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}"
        metrics = worker.metrics()
        assert metrics[("livepulse_records_deferred_total", ())] == 0
        assert metrics[("livepulse_redelivered_records_total", ())] == 0

        # Nothing lost, nothing counted twice: outputs and /metrics equal the batch reference.
        outputs = collect_outputs(pipe, len(expected))
        time.sleep(1.5)  # a live snapshot after the summaries refreshes the event views of /metrics
        check(pipe, outputs, expected, [worker])
        assert worker.metrics()[("livepulse_duplicates_dropped_total", ())] == sum(r.duplicates for r in expected.values())
    finally:
        worker.stop()
