"""One worker's processing, framework-free: a batch of raw Kafka records in; state writes and output records out.

The Faust app (streams/app.py) only moves bytes between Kafka and this class, and `streams.testing` drives the
very same class from plain lists, so every rule can be tested without a broker.

Per batch: decode and validate every record (rejects become dead letters), forward valid records that sit on
the wrong partition, apply the rest to their EventState in partition order, then once per touched event bring
derived state up to date, collect closed minute windows, and list the state keys to persist (attendees first,
the event record last -- see README "Commit order").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from streams.domain.event import DUPLICATE, LATE, REDELIVERED, EventState, Params
from streams.ingest.deadletter import dead_letter
from streams.ingest.decode import Rejection, decode_event, decode_interaction
from streams.partitioning import partition_for

SEP = "/"  # state keys: "<event_id>/<attendee_id>" and "<event_id>/" (event ids cannot contain "/")


class RawRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Output:
    """What one batch (or one tick) produced, in the order it must be written."""

    dead_letters: list[tuple[bytes | None, dict]] = field(default_factory=list)
    rekeyed: list[tuple[bytes, bytes]] = field(default_factory=list)  # (event_id key, original value)
    minutes: list[dict] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)
    leads: list[dict] = field(default_factory=list)
    live: list[dict] = field(default_factory=list)
    state: list[tuple[int, bytes, bytes | None]] = field(default_factory=list)  # (partition, key, value|tombstone)


@dataclass
class Counters:
    """Pipeline-health counters of this worker (exported as *_total)."""

    processed: dict[str, int] = field(default_factory=dict)  # topic -> records
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> records
    duplicates: int = 0
    redelivered: int = 0
    late: int = 0
    rekeyed: int = 0
    after_retention: int = 0
    newest_ts: int | None = None  # ts of the newest record processed (event-time lag)


class Processor:
    def __init__(self, settings, *, partitions: int) -> None:
        self.s = settings
        self.params = Params.from_settings(settings)
        self.partitions = partitions  # partition count of the input topics (co-partitioned)
        self.events: dict[str, EventState] = {}
        self.event_partition: dict[str, int] = {}
        self.forgotten: dict[str, float] = {}  # event ids expired after retention -> wall time
        self.views: dict[str, dict] = {}  # event_id -> latest snapshot or summary (what /metrics shows)
        self.counters = Counters()
        self._topic_index = {settings.topic_interactions: 0, settings.topic_rekeyed: 1, settings.topic_events: 2}

    # ------------------------------------------------------------------ batches
    def process(self, batch: list[RawRecord], wall_now: float) -> Output:
        out = Output()
        now_ms = int(wall_now * 1000)
        s, c = self.s, self.counters
        touched: dict[str, EventState] = {}
        for rec in batch:
            c.processed[rec.topic] = c.processed.get(rec.topic, 0) + 1
            is_event = rec.topic == s.topic_events
            decoded = (decode_event if is_event else decode_interaction)(
                rec.value, now_ms=now_ms, max_bytes=s.max_record_bytes,
                max_future_skew_ms=int(s.max_future_skew_s * 1000),
            )
            if isinstance(decoded, Rejection):
                c.rejected[decoded.reason] = c.rejected.get(decoded.reason, 0) + 1
                out.dead_letters.append((rec.key, dead_letter(
                    decoded, topic=rec.topic, partition=rec.partition, offset=rec.offset, key=rec.key,
                    value=rec.value, schema="event" if is_event else "interaction", now_ms=now_ms,
                )))
                continue
            event_id = decoded["event_id"]
            home = self._home_partition(event_id, rec)
            if home != rec.partition:
                # Valid but on another worker's partition (null or wrong key): send it home, keyed right.
                c.rekeyed += 1
                out.rekeyed.append((event_id.encode(), rec.value))
                continue
            if event_id in self.forgotten:
                c.after_retention += 1
                continue
            ev = self.events.get(event_id)
            if ev is None:
                ev = self.events[event_id] = EventState(event_id, self.params)
                self.event_partition[event_id] = rec.partition
            ev.wall_last = wall_now
            touched[event_id] = ev
            if is_event:
                ev.apply_lifecycle(decoded)
            else:
                result = ev.apply_interaction(decoded, self._topic_index.get(rec.topic, 0), rec.offset)
                if result == DUPLICATE:
                    c.duplicates += 1
                    continue
                if result == REDELIVERED:  # replay after a restart: already in the restored state
                    c.redelivered += 1
                    continue
                if result == LATE:
                    c.late += 1
                if c.newest_ts is None or decoded["ts"] > c.newest_ts:
                    c.newest_ts = decoded["ts"]
        for ev in touched.values():
            ev.advance()
            out.minutes.extend(ev.take_closed_windows())
            self._persist(ev, out)
        return out

    def _home_partition(self, event_id: str, rec: RawRecord) -> int:
        if rec.key is not None and rec.key == event_id.encode():
            return rec.partition  # keyed right: trust the producer's partitioner, whatever it is
        return partition_for(event_id.encode(), self.partitions)

    # ------------------------------------------------------------------ periodic work
    def tick(self, wall_now: float, *, snapshots: bool) -> Output:
        """Summaries that are due, retention expiry, and (when asked) live snapshots of active events."""
        out = Output()
        for event_id, ev in list(self.events.items()):
            if ev.summary_due(wall_now):
                summary, leads = ev.finish(wall_now)
                out.minutes.extend(ev.take_closed_windows())
                out.summaries.append(summary)
                out.leads.extend(leads)
                self.views[event_id] = summary
                self._persist(ev, out)
            elif ev.summary_done and wall_now - (ev.summary_wall or wall_now) >= self.s.retention_s:
                self._expire(event_id, out, wall_now)
                continue
            if snapshots and not ev.summary_done:
                view = self.views[event_id] = ev.snapshot(ev.effective_clock(wall_now))
                out.live.append(view)
        horizon = wall_now - max(self.s.retention_s, 3600.0)
        for event_id in [e for e, t in self.forgotten.items() if t < horizon]:
            del self.forgotten[event_id]
        return out

    def _expire(self, event_id: str, out: Output, wall_now: float) -> None:
        ev = self.events.pop(event_id)
        self.views.pop(event_id, None)
        partition = self.event_partition.pop(event_id)
        for aid in ev.attendees:
            out.state.append((partition, f"{event_id}{SEP}{aid}".encode(), None))
        out.state.append((partition, f"{event_id}{SEP}".encode(), None))
        self.forgotten[event_id] = wall_now

    def _persist(self, ev: EventState, out: Output) -> None:
        partition = self.event_partition[ev.event_id]
        attendees, event_changed = ev.take_dirty()
        prefix = ev.event_id + SEP
        for aid in attendees:
            out.state.append((partition, (prefix + aid).encode(), orjson.dumps(ev.attendees[aid].dump())))
        if event_changed or attendees:
            out.state.append((partition, prefix.encode(), orjson.dumps(ev.dump_event())))

    # ------------------------------------------------------------------ partitions
    def restore(self, partition: int, items, wall_now: float) -> int:
        """Rebuild the events of one partition from its persisted state records; returns events restored."""
        grouped: dict[str, tuple[dict | None, dict[str, list]]] = {}
        for key, value in items:
            event_id, _, aid = key.decode().partition(SEP)
            entry = grouped.setdefault(event_id, (None, {}))
            if aid:
                entry[1][aid] = orjson.loads(value)
            else:
                grouped[event_id] = (orjson.loads(value), entry[1])
        for event_id, (event, attendees) in grouped.items():
            ev = EventState.load(event_id, self.params, event, attendees)
            ev.wall_last = wall_now
            self.events[event_id] = ev
            self.event_partition[event_id] = partition
        return len(grouped)

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget the events of revoked partitions (their new owner restores them from the changelog)."""
        for event_id in [e for e, p in self.event_partition.items() if p in partitions]:
            del self.events[event_id]
            del self.event_partition[event_id]
            self.views.pop(event_id, None)
