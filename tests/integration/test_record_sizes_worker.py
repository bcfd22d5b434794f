"""A real worker on the embedded broker, given the records that made oversized ones: an input of about 1 MB
(its dead letter embedded all of it, 1.3 MB in base64), a batch of the longest ids (one ids record of almost
1 MB) and an attendee past the polls cap with the longest poll ids. Every record the worker writes -- state,
dead letters -- stays under 1 MiB, and the worker stays up."""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest

from streams.ingest.contracts import validator
from streams.outputs import fit
from streams.state.store import changelog_topic
from tests.integration.harness import Pipeline, WorkerProcess, consume, produce, wait_until
from tests.webinars import T0

pytestmark = pytest.mark.integration

LIMIT = 1_048_576


def test_no_record_the_worker_writes_exceeds_the_limit(broker, tmp_path):
    pipe = Pipeline(broker, tmp_path, partitions=1, extra_env={"LIVEPULSE_STORE": "memory",
                                                               "LIVEPULSE_MAX_FUTURE_SKEW_S": str(400 * 86_400)})
    s = pipe.settings
    topic = s.topic_interactions
    big = b'{"event_id": "ev", "pad": "' + b"x" * 1_000_000 + b'"}'
    ids = [(topic, b"ev", orjson.dumps({"id": f"{i:06d}" + "i" * 122, "event_id": "ev", "type": "heartbeat",
                                        "attendee_id": f"{i % 300:03d}" + "a" * 253, "ts": T0 + i}))
           for i in range(6000)]
    polls = [(topic, b"ev", orjson.dumps({"id": f"p{i}", "event_id": "ev", "attendee_id": "voter", "type": "poll_vote",
                                          "poll_id": f"{i:03d}" + "\x01" * 125, "ts": T0 + i}))
             for i in range(s.max_polls_per_attendee + 3)]
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready()
        asyncio.run(produce(broker, [(topic, b"ev", big)] + ids + polls))
        wait_until(lambda: worker.metrics().get(("livepulse_records_capped_total", (("cap", "polls"),))) == 3,
                   what="the polls cap", timeout=120)
        changelog = changelog_topic(pipe.app_id)
        got = asyncio.run(consume(broker, [s.topic_dlq, changelog],
                                  until=lambda r: len(r[s.topic_dlq]) >= 4 and r[changelog]))
        assert worker.proc.poll() is None, worker.log_tail()
    finally:
        worker.stop()
    letters = [orjson.loads(v) for _, v in got[s.topic_dlq]]
    assert sorted(d["reason"] for d in letters) == ["cap_exceeded"] * 3 + ["too_large"]
    too_large = next(d for d in letters if d["reason"] == "too_large")
    assert validator("dead_letter").is_valid(too_large)
    assert too_large["truncated"] == {"key_bytes": 2, "value_bytes": len(big)}
    assert big.startswith(base64.b64decode(too_large["value_b64"]))
    for key, value in got[s.topic_dlq] + got[changelog]:
        assert fit.record_bytes(key, value) <= LIMIT - 100, (key[:40], len(value or b""))
    id_records = [orjson.loads(v) for k, v in got[changelog] if b"|i" in k and v]
    assert sum(len(r) for r in id_records) >= 6000 * 5 and len(id_records) >= 2, "the ids are split"
