"""A real worker under hostile input on the embedded broker: a flood of distinct event ids beyond the cap, the
malformed corpus and a bot flooding one event, mixed with real webinars. The worker stays up and healthy, its
memory stays bounded, every rejected record is in the DLQ once with its reason, and the webinars' outputs still
equal the batch reference."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streams.testing import run_records
from tests.ingest.corpus import CORPUS
from tests.integration.harness import (
    Pipeline,
    WorkerProcess,
    consume,
    decoded,
    produce,
    wait_until,
)
from tests.integration.test_worker_reference import (
    _as_sim,
    check,
    collect_outputs,
    expected_of,
    feed,
    scenario,
)
from tests.webinars import SETTINGS

pytestmark = pytest.mark.integration

MAX_EVENTS = 200
FLOOD = 20_000  # distinct event ids
BOT = 2_000  # interactions of one bot attendee, over its cap below
BOT_CAP = 500
RSS_LIMIT_MB = 600  # a worker with these caps; a leak per event id would blow far past it


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak resident set size
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_worker_survives_hostile_input_and_keeps_exact_results(broker, tmp_path):
    pipe = Pipeline(broker, tmp_path, partitions=3, extra_env={
        "LIVEPULSE_MAX_EVENTS": str(MAX_EVENTS), "LIVEPULSE_MAX_INTERACTIONS_PER_ATTENDEE": str(BOT_CAP),
        "LIVEPULSE_STORE": "memory"})
    raw, sentinels = scenario(seed=5, events=2, partitions=3)
    expected = expected_of(raw, sentinels, pipe.settings)
    topic = pipe.settings.topic_interactions
    t0 = min(r.summary["ended_at"] for r in expected.values())
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready()
        feed(pipe, _as_sim(raw))  # the real webinars come first: their events are admitted under the cap
        bot_event = "bot-target"
        bot = [(topic, bot_event.encode(), orjson.dumps(
            {"id": f"b{i}", "event_id": bot_event, "attendee_id": "bot", "type": "reaction", "ts": t0 + i}))
            for i in range(BOT)]
        asyncio.run(produce(broker, bot))  # (admitted before the flood fills the event cap)
        wait_until(lambda: worker.metrics().get(("livepulse_records_capped_total", (("cap", "interactions"),)))
                   == BOT - BOT_CAP, what="the bot capped")
        hostile = [(topic, f"flood-{i}".encode(), orjson.dumps(
            {"id": "x", "event_id": f"flood-{i}", "attendee_id": "a", "type": "join", "ts": t0}))
            for i in range(FLOOD)]
        hostile += [(topic, b"corpus", value) for _, value, _ in CORPUS]
        asyncio.run(produce(broker, hostile))
        asyncio.run(produce(broker, [(topic, k, v) for k, v in sentinels]))

        # The webinars' outputs are exactly the reference, hostile traffic notwithstanding.
        outputs = collect_outputs(pipe, len(expected))
        check(pipe, outputs, expected, [worker])

        admitted = MAX_EVENTS - len(expected) - 1  # flood events admitted before the cap (bot-target is one)
        want = Counter({"cap_exceeded": FLOOD - admitted + BOT - BOT_CAP})
        want.update(reason for _, _, reason in CORPUS)
        want.update(d["reason"] for d in run_records(raw, SETTINGS, partitions=3, wall_start=time.time(),
                                                     finish=False).dead_letters)  # the simulator's own bad records
        dlq = pipe.settings.topic_dlq
        got = asyncio.run(consume(broker, [dlq], until=lambda r: len(r[dlq]) >= sum(want.values()), timeout=120))
        time.sleep(1)
        dead = decoded(asyncio.run(consume(broker, [dlq], until=lambda r: len(r[dlq]) >= sum(want.values())))[dlq])
        assert len(got[dlq]) >= sum(want.values())
        # At-least-once: a batch replayed after a crash could repeat a dead letter; none happened here.
        assert Counter(d["reason"] for d in dead) == want

        metrics = worker.metrics()
        assert metrics[("livepulse_events_tracked", ())] == MAX_EVENTS
        assert metrics[("livepulse_records_capped_total", (("cap", "events"),))] == FLOOD - admitted
        assert metrics[("livepulse_records_capped_total", (("cap", "interactions"),))] == BOT - BOT_CAP
        assert worker.proc.poll() is None, "the worker is still running"
        peak = rss_mb(worker.proc.pid)
        print(f"hostile input: peak RSS {peak:.0f} MB with {MAX_EVENTS} events tracked")
        assert peak < RSS_LIMIT_MB
    finally:
        worker.stop()
