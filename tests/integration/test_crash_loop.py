"""No record crash-loops a real worker: schema-valid records with internal field names on every input and
internal topic are dead-lettered, and a record that kills the process outright is skipped after
LIVEPULSE_POISON_ATTEMPTS deaths, while the webinars around them are summarised exactly.

The killer is a fault injected into the worker process (a sitecustomize hook that SIGKILLs the process when it
applies one attendee's record), standing in for a crash in a C extension or memory exhausted: what the worker
sees is a process that died in the middle of a batch, again after every restart."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter

import orjson
import pytest

from streams.testing import run_records
from tests.integration.harness import Pipeline, WorkerProcess, consume, decoded, produce, wait_until
from tests.integration.test_worker_reference import (
    _as_sim,
    check,
    collect_outputs,
    expected_of,
    feed,
    scenario,
)
from tests.test_hostile_input import FOREIGN_FACTS
from tests.webinars import SETTINGS

pytestmark = pytest.mark.integration

KILLER = "kill-me"
HOOK = f'''
import os, signal
from streams.domain import event

_apply = event.EventState.apply_interaction


def apply_interaction(self, rec, *args):
    if rec.get("attendee_id") == "{KILLER}":
        os.kill(os.getpid(), signal.SIGKILL)  # dies outright: no exception, no exit handler
    return _apply(self, rec, *args)


event.EventState.apply_interaction = apply_interaction
'''
ATTEMPTS = 2


def test_no_record_on_any_topic_crash_loops_the_worker(broker, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    pipe = Pipeline(broker, tmp_path, partitions=2, extra_env={
        "PYTHONPATH": str(hook), "LIVEPULSE_POISON_ATTEMPTS": str(ATTEMPTS), "LIVEPULSE_STORE": "memory",
        "LIVEPULSE_SESSION_TIMEOUT_S": "3"})
    s = pipe.settings
    raw, sentinels = scenario(seed=9, events=2, partitions=2)
    expected = expected_of(raw, sentinels, s)
    some_event = min(expected)
    t0 = min(r.summary["ended_at"] for r in expected.values()) - 60_000
    opportunity = {"opportunity_id": "o1", "organizer_id": "org", "stage": "created", "ts": t0, "account_id": "a"}
    hostile = [
        *[(s.topic_opportunities, b"org", orjson.dumps(opportunity | {"fact": f})) for f in ("event", "leads")],
        *[(s.topic_roi_facts, b"org", orjson.dumps(f)) for f in FOREIGN_FACTS],
        (s.topic_rekeyed, some_event.encode(), orjson.dumps({"fact": "leads", "organizer_id": "org",
                                                             "event_id": some_event, "leads": []})),
        (s.topic_rekeyed, some_event.encode(), b"\x00not json"),
        (s.topic_events, some_event.encode(), orjson.dumps({"fact": "event", "organizer_id": "org",
                                                            "event_id": some_event})),
    ]
    want = Counter({"schema_violation": len(hostile) - 1, "invalid_json": 1, "poison_record": 1})
    want.update(d["reason"] for d in run_records(raw, SETTINGS, partitions=2, wall_start=time.time(),
                                                 finish=False).dead_letters)  # the simulator's own bad records
    killer = {"id": "k1", "event_id": some_event, "attendee_id": KILLER, "type": "chat", "ts": t0}

    worker = WorkerProcess(pipe).start()
    deaths = 0

    def supervise() -> None:
        nonlocal deaths
        if worker.proc.poll() is not None:
            assert worker.proc.returncode == -9, f"exit {worker.proc.returncode}:\n{worker.log_tail(60)}"
            deaths += 1
            worker.start()

    try:
        worker.wait_ready()
        half = len(raw) // 2
        feed(pipe, _as_sim(raw[:half]))
        asyncio.run(produce(broker, hostile + [(s.topic_interactions, some_event.encode(), orjson.dumps(killer))]))
        feed(pipe, _as_sim(raw[half:]))
        asyncio.run(produce(broker, [(s.topic_interactions, k, v) for k, v in sentinels]))

        def skipped() -> bool:
            supervise()
            try:
                got = worker.metrics()
            except OSError:  # restarting
                return False
            return got.get(("livepulse_records_rejected_total", (("reason", "poison_record"),))) == 1

        wait_until(skipped, timeout=240, what="the killer record skipped")
        assert ATTEMPTS <= deaths <= 1 + ATTEMPTS, "(once in its batch, unless alone there) then alone to the limit"

        outputs = collect_outputs(pipe, len(expected))
        check(pipe, outputs, expected, [worker])
        dlq = s.topic_dlq
        got = asyncio.run(consume(broker, [dlq], until=lambda r: len(r[dlq]) >= sum(want.values()), timeout=60))
        # (at-least-once: input replayed after a death may repeat a dead letter; one per source record counts)
        dead = list({(d["source_topic"], d["source_partition"], d["source_offset"]): d
                     for d in decoded(got[dlq])}.values())
        assert Counter(d["reason"] for d in dead) == want
        [poisoned] = [d for d in dead if d["reason"] == "poison_record"]
        assert orjson.loads(base64.b64decode(poisoned["value_b64"]))["attendee_id"] == KILLER
        assert {d["schema"] for d in dead if d["source_topic"] == s.topic_roi_facts} == {"roi_fact"}
        assert worker.proc.poll() is None, "the worker is up"
        assert "skipping" in worker.log_tail(400)
    finally:
        worker.stop()
