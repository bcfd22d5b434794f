"""Send simulated or recorded records to Kafka (paced by event time or capped by a rate), or write/read them as
JSONL (one record a line, byte-exact: reading a file back gives the very bytes that were generated)."""

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
from streams.simulate.scenario import LOBBY_MS, SimRecord

TOPICS = ("interactions", "events")
PROGRESS_EVERY_S = 5.0


# --- JSONL -----------------------------------------------------------------------------------------------------

def write_jsonl(records: Iterable[SimRecord], out: IO[bytes] | str | Path) -> int:
    """One line per record: {"topic", "key", "ts", "value": <the JSON value>} -- or "value_b64" (base64 of the
    raw bytes) when the value is not JSON that re-encodes to the same bytes (the malformed records)."""
    if isinstance(out, (str, Path)):
        with open(out, "wb") as f:
            return write_jsonl(records, f)
    n = 0
    for rec in records:
        line: dict[str, object] = {"topic": rec.topic, "key": rec.key.decode(), "ts": rec.ts}
        try:
            value = orjson.loads(rec.value)
            exact = orjson.dumps(value) == rec.value
        except orjson.JSONDecodeError:
            exact = False
        if exact:
            line["value"] = value
        else:
            line["value_b64"] = base64.b64encode(rec.value).decode()
        out.write(orjson.dumps(line) + b"\n")
        n += 1
    return n


def read_jsonl(path: str | Path) -> list[SimRecord]:
    """Records of a file written by `write_jsonl` (or by hand: "ts" is optional, taken from the value)."""
    records = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = orjson.loads(line)
                if d["topic"] not in TOPICS:
                    raise ValueError(f"topic must be one of {TOPICS}, not {d['topic']!r}")
                if "value_b64" in d:
                    value = base64.b64decode(d["value_b64"], validate=True)
                    ts = int(d["ts"])
                else:
                    value = orjson.dumps(d["value"])
                    ts = int(d["ts"]) if "ts" in d else _ts_of(d["value"])
                key = d.get("key")
                records.append(SimRecord(d["topic"], key.encode() if key is not None else b"", value, ts))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"{path}:{number}: not a LivePulse JSONL record ({type(exc).__name__}: {exc})") \
                    from None
    return records


def _ts_of(value: object) -> int:
    ts = value.get("ts") if isinstance(value, dict) else None
    if isinstance(ts, int):
        return ts
    if isinstance(ts, str):
        from datetime import datetime

        return int(datetime.fromisoformat(ts).timestamp() * 1000)
    raise ValueError("no ts")


# --- Kafka -----------------------------------------------------------------------------------------------------

def pacing_anchor(records: list[SimRecord]) -> int | None:
    """Event time at which paced playback begins: the lobby opening before the earliest `started` record (or the
    earliest join). Older records (the announcement, registrations days before) go out at once."""
    starts, joins = [], []
    for rec in records:
        if rec.topic == "events" and b'"type":"started"' in rec.value:
            starts.append(rec.ts)
        elif rec.topic == "interactions" and b'"type":"join"' in rec.value:
            joins.append(rec.ts)
    if starts:
        return min(starts) - LOBBY_MS
    if joins:
        return min(joins)
    return min((r.ts for r in records), default=None)


async def produce(records: list[SimRecord], settings: Settings, *, speed: float | None = None,
                  rate: float | None = None, progress: IO[str] | None = sys.stderr,
                  anchor_ms: int | None = None, anchor_is_wall: bool = False, create_topics: bool = True) -> int:
    """Send the records in list order (key = event_id, acks=all) to settings.topic_interactions/topic_events.

    speed: play event time `speed` times faster than real time (60: a minute of event time per second); the
    record at `anchor_ms` (default `pacing_anchor`) goes out now -- or, with anchor_is_wall, when the wall clock
    was at anchor_ms (`--start now`: time spent generating and connecting is caught up) -- later ones when their
    time comes, earlier ones at once. Without speed: as fast as possible. rate: at most this many records per second (both can apply).
    Progress (records sent, rate) goes to `progress` every few seconds. Returns the number of records sent.
    """
    from aiokafka import AIOKafkaProducer

    from streams.kafka import client_kwargs, ensure_topics

    if speed is not None and speed <= 0:
        raise ValueError("speed must be positive")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    topics = {"interactions": settings.topic_interactions, "events": settings.topic_events}
    if create_topics:  # with the configured partition count; existing topics are kept as they are
        await ensure_topics(settings, {name: settings.partitions for name in topics.values()})
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", linger_ms=20,
                                max_batch_size=512 * 1024)
    await producer.start()
    anchor = (anchor_ms if anchor_ms is not None else pacing_anchor(records)) if speed else None
    started = time.monotonic()
    paced_from = started - (max(0.0, time.time() * 1000 - anchor) / 1000 if anchor is not None and anchor_is_wall
                            else 0.0)
    last_report, sent_at_report = started, 0
    pending: list[asyncio.Future] = []
    total = len(records)
    try:
        for n, rec in enumerate(records):
            if anchor is not None and rec.ts > anchor:
                delay = paced_from + (rec.ts - anchor) / 1000 / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if rate:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topics[rec.topic], rec.value, key=rec.key or None))
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
            now = time.monotonic()
            if progress is not None and now - last_report >= PROGRESS_EVERY_S:
                print(f"sent {n + 1:,}/{total:,} records ({(n + 1 - sent_at_report) / (now - last_report):,.0f}/s)",
                      file=progress, flush=True)
                last_report, sent_at_report = now, n + 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    if progress is not None:
        took = time.monotonic() - started
        print(f"sent {total:,} records in {took:.1f} s ({total / max(took, 1e-9):,.0f}/s)", file=progress, flush=True)
    return total
