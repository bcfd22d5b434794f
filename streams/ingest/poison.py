"""Input records a worker died on, remembered across restarts: no record can crash-loop LivePulse.

A record whose processing raises is dead-lettered at once (Processor: `processing_error`). What is left are
records that end the process itself: a crash in a C extension, memory exhausted, a bug in the work done once
per batch after its records. Nothing of that batch was committed, so every restart, and every worker that
takes the partition over, would meet the record again.

So before the Processor takes a batch, the worker notes the offsets the batch holds in a small file beside its
state, and after it, that the batch is done (no fsync: the page cache outlives the process, and a dead process
is what this guards against). A worker that starts and finds a batch still in flight died in it: those offsets
become suspects. Suspects are processed one record at a time, each alone in flight, so the next death names
its record. A record its worker died on `max_attempts` times while it was alone in flight is skipped: the
caller dead-letters it (`poison_record`) and counts it. Suspects expire once a record after them is done, or
after `max_age_s` (a partition that went to another worker for good).

Only the Processor's pure work is in flight, never the writes to Kafka: a worker that exits because it cannot
write (or stood still, or was fenced) does not make its input suspect.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

FILE_NAME = "in-flight.json"


class PoisonGuard:
    def __init__(self, path: Path | None, max_attempts: int, *, max_age_s: float = 86_400.0,
                 now: float | None = None) -> None:
        self.path = path  # None: nothing is remembered (tests that drive the Processor alone)
        self.max_attempts = max_attempts
        self.max_age_s = max_age_s
        # (topic, partition) -> [[first offset, last offset, deaths, since (wall time)], ...]
        self.suspects: dict[tuple[str, int], list[list]] = {}
        self.died_in: list[list] = []  # what the previous process had in flight when it died (for the log)
        self._in_flight: list[list] = []
        self._fd: int | None = None
        if path is not None:
            self._load(path, time.time() if now is None else now)

    # ------------------------------------------------------------------ start-up
    def _load(self, path: Path, now: float) -> None:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            data = {}
        except (OSError, orjson.JSONDecodeError):  # torn by a crash of the machine itself: start afresh
            data = {}
        for topic, partition, first, last, deaths, since in data.get("suspects", ()):
            if now - since < self.max_age_s:
                self.suspects.setdefault((topic, partition), []).append([first, last, deaths, since])
        self.died_in = [list(r) for r in data.get("in_flight", ())]
        for topic, partition, first, last in self.died_in:
            self._suspect(topic, partition, first, last, now)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._write()

    def _suspect(self, topic: str, partition: int, first: int, last: int, now: float) -> None:
        ranges = self.suspects.setdefault((topic, partition), [])
        for r in ranges:
            if r[0] == first and r[1] == last:
                r[2] += 1
                return
        ranges.append([first, last, 1, now])

    # ------------------------------------------------------------------ per batch
    def chunks(self, records: Sequence[Any]) -> Iterator[tuple[Sequence[Any], int]]:
        """The batch as (records, deaths): runs of unsuspected records together (deaths 0), each suspect alone
        with the deaths of its own single-record range. A run keeps the batch's order: results are identical."""
        if not self.suspects:
            yield records, 0
            return
        run_start = 0
        for i, rec in enumerate(records):
            ranges = self.suspects.get((rec.topic, rec.partition))
            if not ranges:
                continue
            offset = rec.offset
            alone = -1
            for first, last, deaths, _ in ranges:
                if first <= offset <= last:
                    alone = max(alone, deaths if first == last else 0)
            if alone < 0:
                continue
            if run_start < i:
                yield records[run_start:i], 0
            yield records[i:i + 1], alone
            run_start = i + 1
        if run_start < len(records):
            yield records[run_start:], 0

    def begin(self, records: Sequence[Any]) -> None:
        """Note the offsets of `records` as in flight (one range per topic-partition)."""
        if self._fd is None:
            return
        spans: dict[tuple[str, int], list] = {}
        for rec in records:
            tp = (rec.topic, rec.partition)
            span = spans.get(tp)
            if span is None:
                spans[tp] = [rec.offset, rec.offset]
            elif rec.offset < span[0]:
                span[0] = rec.offset
            elif rec.offset > span[1]:
                span[1] = rec.offset
        self._in_flight = [[t, p, first, last] for (t, p), (first, last) in spans.items()]
        self._write()

    def done(self, records: Sequence[Any]) -> None:
        """`records` were processed (or skipped): nothing is in flight, and suspects they got past are cleared."""
        if self._fd is None:
            return
        if self.suspects:
            newest: dict[tuple[str, int], int] = {}
            for rec in records:
                tp = (rec.topic, rec.partition)
                if rec.offset > newest.get(tp, -1):
                    newest[tp] = rec.offset
            for tp, offset in newest.items():
                ranges = self.suspects.get(tp)
                if ranges:
                    ranges[:] = [r for r in ranges if r[1] > offset]
                    if not ranges:
                        del self.suspects[tp]
        self._in_flight = []
        self._write()

    def _write(self) -> None:
        suspects = [[t, p, *r] for (t, p), ranges in self.suspects.items() for r in ranges]
        data = orjson.dumps({"in_flight": self._in_flight, "suspects": suspects})
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def guard_for(data_dir: Path, max_attempts: int) -> PoisonGuard:
    return PoisonGuard(Path(data_dir) / FILE_NAME, max_attempts)
