"""Data protection on a real worker and the embedded broker: the topics it creates carry their retention and
compaction configs, and `livepulse forget` erases one person from the changelog, livepulse.leads and the ROI
figures -- idempotently, across a restart, with an invalid request dead-lettered while the worker goes on."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.kafka import client_kwargs
from streams.state.store import changelog_topic
from streams.topics import DAY_MS
from tests.integration.harness import Pipeline, WorkerProcess, consume, produce, wait_until
from tests.test_roi import crm_records, hand_case, opp
from tests.webinars import to_raw as kafka_records

pytestmark = pytest.mark.integration


async def topic_configs(settings, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        response = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
        return {r[3]: {e[0]: e[1] for e in r[4]} for resp in response for r in resp.resources}
    finally:
        await admin.close()


def latest(records: list[tuple[bytes | None, bytes | None]]) -> dict[bytes, bytes]:
    """A compacted topic as its consumers see it: the last value per key, tombstones deleting."""
    out: dict[bytes, bytes] = {}
    for key, value in records:
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def forget(pipe: Pipeline, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams", "forget", *args], env=pipe.env(), capture_output=True, check=False,
                          text=True, timeout=120)


def test_forget_erases_a_person_through_a_real_worker(broker, tmp_path):
    pipe = Pipeline(broker, tmp_path, partitions=2, extra_env={"LIVEPULSE_RETENTION_LEADS_DAYS": "10"})
    s = pipe.settings
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready()
        configs = asyncio.run(topic_configs(s, [s.topic_interactions, s.topic_rekeyed, s.topic_dlq, s.topic_leads,
                                                s.topic_erasure, changelog_topic(s.app_id)]))
        assert configs[s.topic_interactions]["retention.ms"] == str(7 * DAY_MS)
        assert configs[s.topic_rekeyed]["retention.ms"] == configs[s.topic_erasure]["retention.ms"] == str(7 * DAY_MS)
        assert configs[s.topic_dlq]["retention.ms"] == str(7 * DAY_MS)
        assert configs[s.topic_leads]["cleanup.policy"] == "compact,delete"
        assert configs[s.topic_leads]["retention.ms"] == str(10 * DAY_MS)  # the setting, overridden
        assert configs[changelog_topic(s.app_id)]["cleanup.policy"] == "compact"
        assert configs[changelog_topic(s.app_id)]["max.compaction.lag.ms"] == str(7 * DAY_MS)

        # org-x's two webinars (u1 attends both), sentinels that make their summaries due, and u1's opportunity.
        arrivals = sorted(hand_case(), key=lambda a: a[1]["ts"])
        ends = {r["event_id"]: r["ts"] for kind, r in arrivals if kind == "event" and r["type"] == "ended"}
        arrivals += [("interaction", {"id": f"sentinel-{e}", "event_id": e, "attendee_id": "sentinel",
                                      "type": "heartbeat", "ts": end + 30_000}) for e, end in ends.items()]
        raw = kafka_records(arrivals, 2, rfc3339_rate=0) + crm_records(
            [opp("o1", "created", 10, 5000, attendee_id="u1")], 2, random.Random(0))
        topic_of = {"livepulse.interactions": s.topic_interactions, "livepulse.events": s.topic_events,
                    "livepulse.crm.opportunities": s.topic_opportunities}  # (this test's own topic names)
        asyncio.run(produce(broker, [(topic_of[r.topic], r.key, r.value) for r in raw]))

        def roi_by_event(received) -> dict[str, dict]:
            return {orjson.loads(v)["event_id"]: orjson.loads(v) for _, v in received[s.topic_roi] if v}

        def leads_of(received) -> dict[bytes, bytes]:
            return latest(received[s.topic_leads])

        before = asyncio.run(consume(broker, [s.topic_leads, s.topic_roi], until=lambda r: (
            {b"e1/u1", b"e2/u1"} <= set(leads_of(r)) and roi_by_event(r).get("e2", {}).get("opportunities") == 1)))
        assert roi_by_event(before)["e1"]["leads"] == 2

        def changelog_mentions() -> list[bytes]:
            got = asyncio.run(consume(broker, [changelog_topic(s.app_id)], until=lambda r: True))
            state = latest(got[changelog_topic(s.app_id)])
            return [k for k, v in state.items() if k.endswith(b"/u1") or b'"u1"' in v]

        assert changelog_mentions(), "the changelog holds u1 before"
        done = forget(pipe, "u1", "--request-id", "dsr-1")
        assert done.returncode == 0, done.stderr
        assert "sent to 2 partitions" in done.stdout
        asyncio.run(produce(broker, [(s.topic_erasure, b"u1", b'{"attendee_id": "u1"}')]))  # no request id, no ts

        after = asyncio.run(consume(broker, [s.topic_leads, s.topic_roi, s.topic_dlq], until=lambda r: (
            not {b"e1/u1", b"e2/u1"} & set(leads_of(r)) and roi_by_event(r).get("e1", {}).get("leads") == 1
            and r[s.topic_dlq])))
        roi = roi_by_event(after)
        assert (roi["e1"]["leads"], roi["e2"]["leads"], roi["e2"]["opportunities"]) == (1, 1, 0)
        assert {b"e1/u3", b"e2/u2"} <= set(leads_of(after)), "the others' leads stay"
        [dead] = [orjson.loads(v) for _, v in after[s.topic_dlq]]
        assert (dead["schema"], dead["reason"], dead["source_topic"]) == ("erasure", "schema_violation",
                                                                          s.topic_erasure)

        wait_until(lambda: not changelog_mentions(), timeout=30, what="a changelog without u1")

        # A restart restores state without u1; the request read again (and a repeated one) changes nothing.
        assert worker.stop() == 0
        worker.start().wait_ready()
        assert forget(pipe, "u1").returncode == 0
        wait_until(lambda: worker.metrics().get(("livepulse_records_processed_total",
                                                 (("topic", s.topic_erasure),)), 0) >= 2,
                   what="the repeated request processed")
        assert not changelog_mentions()
        final = asyncio.run(consume(broker, [s.topic_leads, s.topic_roi], until=lambda r: True))
        assert roi_by_event(final)["e1"]["leads"] == 1 and not {b"e1/u1", b"e2/u1"} & set(leads_of(final))
        assert worker.proc.poll() is None, worker.log_tail()
    finally:
        worker.stop()
