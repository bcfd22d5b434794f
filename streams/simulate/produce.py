"""Send simulated or recorded records to Kafka (paced by event time or by a rate), or write them as JSONL."""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import orjson

from streams.settings import Settings
from streams.simulate.scenario import SimRecord


def write_jsonl(records: Iterable[SimRecord], out: IO[bytes]) -> int:
    """One line per record: {"topic", "key", "value"} (or "value_b64" when the value is not JSON)."""
    n = 0
    for rec in records:
        line = {"topic": rec.topic, "key": rec.key.decode(), "ts": rec.ts}
        try:
            line["value"] = orjson.loads(rec.value)
        except orjson.JSONDecodeError:
            line["value_b64"] = base64.b64encode(rec.value).decode()
        out.write(orjson.dumps(line) + b"\n")
        n += 1
    return n


def read_jsonl(path: Path) -> list[SimRecord]:
    records = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = orjson.loads(line)
                value = base64.b64decode(d["value_b64"]) if "value_b64" in d else orjson.dumps(d["value"])
                records.append(SimRecord(d["topic"], d["key"].encode(), value, int(d["ts"])))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: not a LivePulse JSONL record ({exc})") from None
    return records


async def produce(records: list[SimRecord], settings: Settings, *, speed: float | None = None,
                  rate: float | None = None, progress: IO[str] | None = sys.stderr) -> int:
    """Send the records in order; with `speed`, one second of wall time plays `speed` seconds of event time
    (records older than the first in-room record, e.g. registrations days before, go out at once)."""
    from aiokafka import AIOKafkaProducer

    from streams.kafka import client_kwargs

    topics = {"interactions": settings.topic_interactions, "events": settings.topic_events}
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    started = time.monotonic()
    last_report = started
    anchor = _pacing_anchor(records) if speed else None
    pending = []
    try:
        for n, rec in enumerate(records, 1):
            if anchor is not None and rec.ts > anchor:
                delay = started + (rec.ts - anchor) / 1000 / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if rate:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topics[rec.topic], rec.value, key=rec.key))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
            now = time.monotonic()
            if progress and now - last_report >= 5:
                last_report = now
                print(f"sent {n}/{len(records)} records ({n / (now - started):,.0f}/s)", file=progress)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    if progress:
        took = time.monotonic() - started
        print(f"sent {len(records)} records in {took:.1f} s", file=progress)
    return len(records)


def _pacing_anchor(records: list[SimRecord]) -> int | None:
    """Event time at which pacing starts: the first record that is not a registration or a schedule."""
    starts = [r.ts for r in records if r.topic == "events" and b'"started"' in r.value]
    if starts:
        return min(starts) - 300_000  # lobby joins come up to 5 minutes early
    return min((r.ts for r in records), default=None)
