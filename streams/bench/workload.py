"""The benchmark workload: a fixed, seeded set of concurrent simulated webinars, and a fast bulk producer.

Same arguments, same bytes. The records are the simulator's (realistic type mix: mostly heartbeats, then
registrations, chats, joins, poll votes, leaves, ...; duplicates, reordering and a few malformed records
included), cut at each event's `ended` ts plus one sentinel heartbeat at `ended` + allowed lateness, exactly as
the integration tests do: records after `ended` would race the summary (the worker may close an event on a
timer tick before they arrive), and the sentinel makes every summary due by event time, so the worker's
summaries can be compared exactly with `streams.testing.run_records` over the same records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from streams.partitioning import partition_for
from streams.processor import RawRecord
from streams.simulate.scenario import (
    ScenarioConfig,
    SimRecord,
    concurrent_events,
    generate,
    generate_many,
)

ALLOWED_LATENESS_MS = 30_000  # the default LIVEPULSE_ALLOWED_LATENESS_S (the bench runs the worker on defaults)


@dataclass
class Workload:
    records: list[SimRecord]  # delivery order; topic "interactions" or "events"
    event_ids: list[str]
    seed: int
    registrants: int  # per event, before the +-50% spread

    @property
    def interactions(self) -> int:
        return sum(1 for r in self.records if r.topic == "interactions")

    @property
    def mean_bytes(self) -> float:
        return sum(len(r.value) for r in self.records) / max(1, len(self.records))

    def type_mix(self) -> dict[str, int]:
        mix: dict[str, int] = {}
        for r in self.records:
            try:
                kind = orjson.loads(r.value).get("type", "?")
            except (orjson.JSONDecodeError, AttributeError):
                kind = "malformed"
            mix[str(kind)] = mix.get(str(kind), 0) + 1
        return dict(sorted(mix.items(), key=lambda kv: -kv[1]))

    def raw(self, topics: dict[str, str], partitions: int) -> list[RawRecord]:
        """The records as the worker sees them: partition by key (murmur2, as the producer), offsets per
        topic-partition in delivery order."""
        offsets: dict[tuple[str, int], int] = {}
        out = []
        for r in self.records:
            tp = (topics[r.topic], partition_for(r.key, partitions))
            offsets[tp] = offsets.get(tp, -1) + 1
            out.append(RawRecord(tp[0], tp[1], offsets[tp], r.key, r.value))
        return out


def records_per_registrant(seed: int) -> float:
    """Calibration: how many records one registrant makes (one 200-registrant event of the default shape)."""
    cfg = ScenarioConfig(seed=seed, event_id=f"calibrate-{seed}", registrants=200)
    return len(generate(cfg)) / cfg.registrants


def build(records: int, events: int, seed: int) -> Workload:
    """About `records` records over `events` concurrent 30-minute webinars (the exact count is reported)."""
    per_event = max(10, round(records / events / records_per_registrant(seed)))
    w = _build(per_event, events, seed)
    if abs(len(w.records) - records) > 0.05 * records:  # one correction: sizes spread +-50%, cuts at `ended`
        w = _build(max(10, round(per_event * records / len(w.records))), events, seed)
    return w


def _build(per_event: int, events: int, seed: int) -> Workload:
    cfgs = concurrent_events(seed, events, registrants=per_event)
    if events == 1:  # concurrent_events names a single event webinar-<seed>; keep ids distinct from the probes
        cfgs = [ScenarioConfig(seed=seed, event_id=f"webinar-{seed}-0", registrants=per_event)]
    ends = {c.eid: c.end for c in cfgs}
    cut = [r for r in generate_many(cfgs) if r.topic == "events" or r.ts <= ends[r.key.decode()]]
    sentinels = [SimRecord("interactions", eid.encode(),
                           orjson.dumps({"id": f"sentinel-{eid}", "event_id": eid, "attendee_id": "sentinel",
                                         "type": "heartbeat", "ts": end + ALLOWED_LATENESS_MS}),
                           end + ALLOWED_LATENESS_MS)
                 for eid, end in ends.items()]
    return Workload(cut + sentinels, [c.eid for c in cfgs], seed, per_event)


def background(records: int, events: int, seed: int) -> list[SimRecord]:
    """Load for the freshness phase: other webinars (other ids), delivery order, no cut (they never finish)."""
    per_event = max(10, round(records / events / records_per_registrant(seed)))
    cfgs = concurrent_events(seed, events, registrants=per_event)
    for c in cfgs:
        c.event_id = f"bg-{c.event_id}"
    return generate_many(cfgs)[:records]


async def produce_bulk(bootstrap: str, records: list[tuple[str, bytes, bytes]], partitions: dict[str, int], *,
                       progress: Callable[[int], None] | None = None, batch_bytes: int = 1 << 20,
                       eager: frozenset[str] = frozenset()) -> float:
    """Send (topic, key, value) records as fast as the broker takes them, in big per-partition batches
    (aiokafka's create_batch/send_batch: no per-record future), in order within each partition. Records of the
    `eager` topics (the few lifecycle records) go out at once instead of waiting for their batch to fill.
    Returns seconds.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=batch_bytes,
                                max_request_size=4 * batch_bytes)
    await producer.start()
    started = time.monotonic()
    open_batches: dict[tuple[str, int], object] = {}
    inflight: list[asyncio.Future] = []
    sent = 0

    async def flush(tp: tuple[str, int]) -> None:
        batch = open_batches.pop(tp)
        inflight.append(await producer.send_batch(batch, tp[0], partition=tp[1]))

    try:
        for topic, key, value in records:
            tp = (topic, partition_for(key, partitions[topic]))
            batch = open_batches.get(tp)
            if batch is None:
                batch = open_batches[tp] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                await flush(tp)
                batch = open_batches[tp] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            sent += 1
            if topic in eager:
                await flush(tp)
            if len(inflight) >= 32:
                await asyncio.gather(*inflight)
                inflight.clear()
                if progress:
                    progress(sent)
        for tp in list(open_batches):
            await flush(tp)
        await asyncio.gather(*inflight)
    finally:
        await producer.stop()
    if progress:
        progress(sent)
    return time.monotonic() - started
