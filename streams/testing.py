"""Run the LivePulse processing over plain lists, without a broker (for tests, notebooks and the benchmark).

`run_records` feeds raw records through the same Processor the Faust worker uses, in batches, and collects every
output as a consumer of the output topics would see it. Wall time is simulated so that summaries fire
deterministically once the input is exhausted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from streams.partitioning import partition_for
from streams.processor import Output, Processor, RawRecord
from streams.settings import Settings


@dataclass
class Collected:
    dead_letters: list[dict] = field(default_factory=list)
    rekeyed: list[tuple[bytes, bytes]] = field(default_factory=list)
    minutes: list[dict] = field(default_factory=list)
    summaries: dict[str, dict] = field(default_factory=dict)
    leads: list[dict] = field(default_factory=list)
    live: list[dict] = field(default_factory=list)
    roi: dict[str, dict] = field(default_factory=dict)  # event_id -> last ROI record
    roi_facts: list[tuple[bytes, bytes]] = field(default_factory=list)
    state: dict[bytes, bytes] = field(default_factory=dict)
    lead_tombstones: list[tuple[str, str]] = field(default_factory=list)  # (event_id, attendee_id) erased

    def add(self, out: Output) -> None:
        self.dead_letters.extend(d for _, d in out.dead_letters)
        self.rekeyed.extend(out.rekeyed)
        self.minutes.extend(out.minutes)
        for s in out.summaries:
            self.summaries[s["event_id"]] = s
        self.leads.extend(out.leads)
        self.lead_tombstones.extend(out.lead_tombstones)
        self.live.extend(out.live)
        self.roi_facts.extend(out.roi_facts)
        for r in out.roi:
            self.roi[r["event_id"]] = r
        for _, key, value in out.state:
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value


def raw(topic: str, value: dict | bytes | None, *, key: bytes | str | None = None, partition: int = 0,
        offset: int = 0) -> RawRecord:
    """A RawRecord from a dict (encoded with orjson) or raw bytes; key defaults to the value's event_id."""
    if isinstance(value, dict):
        if key is None:
            key = value.get("event_id")
        value = orjson.dumps(value)
    if isinstance(key, str):
        key = key.encode()
    return RawRecord(topic, partition, offset, key, value)


def run_records(
    records: Iterable[RawRecord],
    settings: Settings | None = None,
    *,
    batch_size: int = 500,
    partitions: int = 1,
    wall_start: float = 1_000_000.0,
    finish: bool = True,
) -> Collected:
    """Process `records` in batches; then let wall time pass so every ended event gets its summary."""
    settings = settings or Settings()
    proc = Processor(settings, partitions=partitions)
    got = Collected()
    batch: list[RawRecord] = []
    wall = wall_start
    for rec in records:
        batch.append(rec)
        if len(batch) >= batch_size:
            got.add(proc.process(batch, wall))
            batch = []
    if batch:
        got.add(proc.process(batch, wall))
    if finish:
        # Silence long enough for every ended event: the effective clock passes end + lateness.
        wall += 86_400.0
        got.add(proc.tick(wall, snapshots=False))
    # The ROI facts topic, looped back as the worker would consume it (forwarded opportunities included).
    fed = 0
    while fed < len(got.roi_facts):
        facts, fed = got.roi_facts[fed:], len(got.roi_facts)
        got.add(proc.process([RawRecord(settings.topic_roi_facts, partition_for(key, partitions), i, key, value)
                              for i, (key, value) in enumerate(facts)], wall))
    got.processor = proc  # type: ignore[attr-defined]
    return got
