"""A real worker on the embedded broker: every bad input lands in the DLQ once, with its reason; the good
records around it (including ones with a null or wrong key) are processed and show up in /metrics."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.ingest.contracts import validate_output
from tests.ingest.corpus import CORPUS
from tests.integration.harness import Pipeline, WorkerProcess, consume, decoded, produce, wait_until

pytestmark = pytest.mark.integration

EVENT = "ingest-e2e"
T0 = 1_767_000_000_000


def good(i: int, **extra) -> bytes:
    rec = {"id": f"g{i}", "event_id": EVENT, "attendee_id": f"a{i % 5}", "type": "chat", "ts": T0 + i * 1000}
    rec.update(extra)
    return orjson.dumps(rec)


def test_malformed_corpus_goes_to_dlq_and_valid_records_flow(broker, tmp_path):
    pipe = Pipeline(broker, tmp_path, partitions=3)
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready()
        topic = pipe.settings.topic_interactions
        records, expected_reasons, n_good = [], [], 0
        for i, (name, value, reason) in enumerate(CORPUS):
            # a good record before each bad one, alternately keyed right, with a null key and with a wrong key
            key = [EVENT.encode(), None, b"some-other-key"][i % 3]
            records.append((topic, key, good(i)))
            n_good += 1
            records.append((topic, EVENT.encode(), value))
            expected_reasons.append((name, reason))
        records.append((topic, None, good(len(CORPUS))))
        n_good += 1
        asyncio.run(produce(broker, records))

        dlq_topic = pipe.settings.topic_dlq
        got = asyncio.run(consume(broker, [dlq_topic], until=lambda r: len(r[dlq_topic]) >= len(CORPUS)))
        dead = decoded(got[dlq_topic])
        for record in dead:
            validate_output("dead_letter", record)
        assert Counter(d["reason"] for d in dead) == Counter(reason for _, reason in expected_reasons)
        # each bad input exactly once, carrying its original bytes
        originals = Counter((base64.b64decode(d["value_b64"]) if d["value_b64"] is not None else None) for d in dead)
        assert originals == Counter(value for _, value, _ in CORPUS)
        assert all(d["source_topic"] == topic and d["error"] for d in dead)

        def processed():
            m = worker.metrics()
            chats = m.get(("livepulse_interactions_total", (("event_id", EVENT), ("type", "chat"))), 0)
            return m if chats == n_good else None

        m = wait_until(processed, timeout=60, what=f"{n_good} chats in /metrics")
        rejected = {dict(labels)["reason"]: v for (name, labels), v in m.items()
                    if name == "livepulse_records_rejected_total"}
        assert rejected == dict(Counter(reason for _, reason in expected_reasons))
        # no more dead letters than bad inputs (nothing double-routed), even a little later
        again = asyncio.run(consume(broker, [dlq_topic], until=lambda r: len(r[dlq_topic]) >= len(CORPUS)))
        assert len(again[dlq_topic]) == len(CORPUS)
    finally:
        worker.stop()


async def produce_with_offset_gaps(broker: str, topic: str, values: list[bytes], offsets: list[int]) -> None:
    """One record batch whose records sit at the given offset deltas: the broker keeps the holes, as Kafka does
    for transaction markers and compacted records."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.split("://", 1)[-1], acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        for value, offset in zip(values, offsets):
            batch._relative_offset = offset  # (aiokafka numbers records 0, 1, 2...; a hole is a skipped number)
            batch.append(key=EVENT.encode(), value=value, timestamp=None)
        batch.close()
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


async def committed_offset(broker: str, group: str, topic: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.split("://", 1)[-1], group_id=group,
                                enable_auto_commit=False)  # never subscribes: only asks for the group's offset
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()


def test_offsets_missing_from_the_input_are_committed_past(broker, tmp_path):
    """Offsets with no record (holes) in an input partition must not stop the commit: Faust's per-record acks
    would wait at the first hole for an ack that never comes, and every restart would replay everything after it."""
    pipe = Pipeline(broker, tmp_path, partitions=1)
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready()
        topic = pipe.settings.topic_interactions
        asyncio.run(produce_with_offset_gaps(broker, topic, [good(i) for i in range(4)], [0, 1, 4, 5]))
        asyncio.run(produce(broker, [(topic, EVENT.encode(), good(4))]))  # offset 6

        def chats():
            m = worker.metrics()
            return m.get(("livepulse_interactions_total", (("event_id", EVENT), ("type", "chat"))), 0) == 5

        wait_until(chats, timeout=60, what="5 chats in /metrics")
        wait_until(lambda: asyncio.run(committed_offset(broker, pipe.app_id, topic)) == 7, timeout=30,
                   what="the group's committed offset to reach 7, past the holes at 2 and 3")
    finally:
        worker.stop()
    restarted = WorkerProcess(pipe, name="w2").start()
    try:
        restarted.wait_ready()
        asyncio.run(produce(broker, [(topic, EVENT.encode(), good(5))]))
        m = wait_until(lambda: (m := restarted.metrics()).get(
            ("livepulse_interactions_total", (("event_id", EVENT), ("type", "chat"))), 0) == 6 and m,
            timeout=60, what="6 chats after the restart")
        assert m.get(("livepulse_redelivered_records_total", ()), 0) == 0, "the restart replayed committed records"
    finally:
        restarted.stop()
