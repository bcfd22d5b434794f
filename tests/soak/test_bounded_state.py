"""Soak (make soak): many events starting and ending one after another; what a worker holds must flatten.

(a) the Processor directly, in simulated wall time (a few minutes of CPU): events, attendees, id memory, state
    keys and traced Python memory sampled through 600 events;
(b) a real worker on the embedded broker for SOAK_SECONDS (default 180) with RSS read from /proc.
Both compare the maximum of the second half of the run with the first half (after a warm-up), with tolerance.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import tracemalloc
import urllib.request
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.bounded import T0_S, new_run, play
from tests.integration.harness import Pipeline, WorkerProcess

pytestmark = pytest.mark.soak
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))


def _halves(values: list[float], warmup: float = 0.2) -> tuple[float, float]:
    values = values[int(len(values) * warmup):]
    mid = len(values) // 2
    return max(values[:mid]), max(values[mid:])


def test_processor_state_and_memory_flatten_over_600_events():
    run = new_run(retention_s=600.0)
    # a new 12-minute event every 5 minutes (3 overlap), 40 attendees each: 50 h of simulated time
    schedule = [(f"soak{k}", T0_S + k * 300, 40, 720) for k in range(600)]
    samples, memory = [], []
    tracemalloc.start(1)
    try:
        def sample(r):
            samples.append(r.held())
            if len(samples) % 120 == 0:  # every hour of simulated time
                gc.collect()  # memory allocated by product code (streams/) that is still alive, not the test's
                memory.append(sum(st.size for st in tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(True, "*/streams/*")]).statistics("filename")))

        play(run, schedule, until_s=T0_S + 600 * 300 + 1800, sample=sample)
    finally:
        tracemalloc.stop()
    assert run.summaries == 600
    for name in ("events", "attendees", "ids", "id_owner", "views", "forgotten", "state_keys"):
        first, second = _halves([getattr(s, name) for s in samples])
        assert second <= first * 1.1 + 2, f"{name} grows: max {first} in the first half, {second} in the second"
    first, second = _halves(memory)
    assert second <= first * 1.15 + 512 * 1024, f"traced memory grows: {first / 1e6:.1f} MB -> {second / 1e6:.1f} MB"
    end = run.held()
    assert (end.events, end.attendees, end.state_keys) == (0, 0, 0)
    print(f"\nmax events {max(s.events for s in samples)}, attendees {max(s.attendees for s in samples)}, "
          f"ids {max(s.ids for s in samples)}, state keys {max(s.state_keys for s in samples)}, "
          f"forgotten {max(s.forgotten for s in samples)}; memory held by streams/ code every 10 h (MB): "
          f"{[round(m / 1e6, 1) for m in memory[::10]]}")


def _growths(values: list[float], warmup: float = 0.2) -> tuple[float, float]:
    """Growth of the maximum over the first and over the second half of the run (after a warm-up)."""
    values = values[int(len(values) * warmup):]
    mid = len(values) // 2
    return max(values[:mid]) - values[0], max(values[mid:]) - max(values[:mid])


def _events_held(port: int) -> int:
    """Events the worker's processor holds (its /health)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return orjson.loads(r.read())["events"]


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.integration
@pytest.mark.timeout(SOAK_SECONDS + 240)
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc for RSS")
def test_real_worker_rss_flattens(broker, tmp_path):
    seconds = SOAK_SECONDS
    pipe = Pipeline(broker, tmp_path, partitions=2, extra_env={
        "LIVEPULSE_STORE": "memory", "LIVEPULSE_RETENTION_S": "5", "LIVEPULSE_ALLOWED_LATENESS_S": "1",
        "LIVEPULSE_IDLE_TIMEOUT_S": "10",
        # ROI ledgers keep every event for its attribution window (days of event time, docs/semantics.md "Marketing
        # ROI"): tracemalloc showed them as the whole growth of this run; this soak is about the engagement state.
        "LIVEPULSE_ROI_ENABLED": "false"})
    worker = WorkerProcess(pipe).start()
    rss, held, sent = [], [], 0
    try:
        worker.wait_ready()
        s = pipe.settings

        async def drive() -> int:
            producer = AIOKafkaProducer(bootstrap_servers=broker.split("://", 1)[-1], acks="all", linger_ms=5)
            await producer.start()
            n = 0
            try:
                deadline = time.monotonic() + seconds
                next_sample = time.monotonic()
                while time.monotonic() < deadline:
                    eid = f"rss-{uuid.uuid4().hex[:8]}"
                    t0 = int(time.time() * 1000)
                    recs = [(s.topic_events, {"event_id": eid, "type": "started", "ts": t0})]
                    for a in range(30):
                        aid = f"{eid}-{a}"
                        recs.append((s.topic_interactions, {"id": f"{aid}-j", "event_id": eid, "attendee_id": aid,
                                                            "type": "join", "ts": t0 + a}))
                        for h in range(8):
                            recs.append((s.topic_interactions, {"id": f"{aid}-{h}", "event_id": eid,
                                                                "attendee_id": aid, "type": "heartbeat",
                                                                "ts": t0 + 1000 + h * 1000 + a}))
                    recs.append((s.topic_events, {"event_id": eid, "type": "ended", "ts": t0 + 10_000}))
                    futures = [await producer.send(t, orjson.dumps(v), key=eid.encode()) for t, v in recs]
                    await asyncio.gather(*futures)
                    n += 1
                    if time.monotonic() >= next_sample:
                        rss.append(_rss_kb(worker.proc.pid))
                        held.append(await asyncio.to_thread(_events_held, worker.port))
                        next_sample += 5
                    await asyncio.sleep(0.5)
            finally:
                await producer.stop()
            return n

        sent = asyncio.run(drive())
    finally:
        worker.stop()
    assert len(rss) >= 10
    print(f"\n{sent} events in {seconds:.0f} s; RSS MB every 5 s: {[round(r / 1024) for r in rss]}; "
          f"events held: {held}")
    # flattening, not just "not much bigger": the second half may grow at most half as much as the first
    # (a leak grows as much in both halves), with 8 MB of slack for allocator noise
    grow1, grow2 = _growths(rss)
    assert grow2 <= 0.5 * grow1 + 8 * 1024, f"worker RSS keeps growing: +{grow1} kB, then +{grow2} kB"
    h1, h2 = _halves(held)
    assert h2 <= h1 * 1.2 + 5, f"events held grow: {h1} -> {h2}"
