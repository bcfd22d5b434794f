"""What the contestants share: the minute-window key of a record, and how a contestant reports its result.

Every contestant (ceiling, peers) runs in its own process, consumes the benchmark topic from the beginning with
its own consumer group, and prints one line `BENCH_RESULT {"records": n, "seconds": s, ...}` when it has handled
the expected number of records. `seconds` runs from the first record handled to the last one, so process start,
imports and the consumer-group join are excluded (reported apart as `startup_s`).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime

import orjson

RESULT_PREFIX = "BENCH_RESULT "
MINUTE_MS = 60_000
PROCESS_START = time.monotonic()


def ts_ms(ts: object) -> int | None:
    """Event time of a record: epoch ms, or an RFC 3339 string (a share of the simulated clients send those)."""
    if isinstance(ts, int):
        return ts
    if isinstance(ts, str):
        try:
            return int(datetime.fromisoformat(ts).timestamp() * 1000)
        except ValueError:
            return None
    return None


def minute_key(value: dict | None) -> str | None:
    """"<event_id>|<minute start ms>|<type>" of a decoded interaction, or None for a record without one."""
    if not isinstance(value, dict):
        return None
    ts = ts_ms(value.get("ts"))
    if ts is None:
        return None
    return f"{value.get('event_id')}|{ts - ts % MINUTE_MS}|{value.get('type')}"


def loads_or_none(value: bytes | bytearray | None) -> object:
    """orjson.loads, None for bytes that are not JSON (the workload has a few malformed records)."""
    try:
        return orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None


class Stopwatch:
    """First record to the expected-th record."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None

    def tick(self, n: int = 1) -> bool:
        """Count n handled records; True once the expected number is reached."""
        if self.first is None:
            self.first = time.monotonic()
        self.count += n
        if self.count >= self.expected and self.last is None:
            self.last = time.monotonic()
            return True
        return False

    def result(self, **extra: object) -> dict:
        seconds = (self.last or time.monotonic()) - (self.first or PROCESS_START)
        return {"records": self.count, "seconds": round(seconds, 4),
                "records_per_s": round(self.count / seconds, 1) if seconds > 0 else None,
                "startup_s": round((self.first or PROCESS_START) - PROCESS_START, 3), **extra}


def report(result: dict) -> None:
    """Straight to file descriptor 1: frameworks may have replaced sys.stdout by then."""
    sys.stdout.flush()
    os.write(1, ("\n" + RESULT_PREFIX + orjson.dumps(result).decode() + "\n").encode())


def parse_result(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):  # a framework may have written terminal codes before it
        if RESULT_PREFIX in line:
            return orjson.loads(line.split(RESULT_PREFIX, 1)[1])
    return None


def contestant_args(argv: list[str] | None = None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap", required=True, help="host:port")
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--expected", type=int, required=True, help="records to handle before stopping")
    p.add_argument("--group", required=True, help="consumer group (and app id)")
    p.add_argument("--workdir", required=True, help="directory for local state")
    return p.parse_args(argv)
