"""Drive the Processor through many events that start and end one after another, in simulated wall time, and
measure what it holds (shared by tests/test_bounded_state.py and the soak test)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import orjson

from streams.processor import Processor, RawRecord
from streams.settings import Settings

T0_S = 1_767_000_000  # wall/event time of the first event (epoch seconds)
S = 1000


@dataclass
class Held:
    """What the processor holds at one instant."""

    events: int
    attendees: int
    ids: int  # de-duplication memory: remembered interaction ids, summed over attendees
    id_owner: int  # EventState._id_owner entries
    views: int
    forgotten: int
    state_keys: int  # live keys of the state table (what the changelog keeps after compaction)
    counter_keys: int  # keys of the Counters dicts


@dataclass
class Run:
    settings: Settings
    processor: Processor
    state: dict[bytes, bytes] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    summaries: int = 0
    wall: float = float(T0_S)

    def rec(self, topic: str, value: dict) -> RawRecord:
        off = self.offsets[topic] = self.offsets.get(topic, -1) + 1
        return RawRecord(topic, 0, off, value["event_id"].encode(), orjson.dumps(value))

    def apply(self, out) -> None:
        for _, key, value in out.state:
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        self.summaries += len(out.summaries)

    def held(self) -> Held:
        p = self.processor
        c = p.counters
        return Held(
            events=len(p.events),
            attendees=sum(len(ev.attendees) for ev in p.events.values()),
            ids=sum(a.id_count() for ev in p.events.values() for a in ev.attendees.values()),
            id_owner=sum(len(ev._id_owner) for ev in p.events.values()),
            views=len(p.views),
            forgotten=len(p.forgotten),
            state_keys=len(self.state),
            counter_keys=len(c.processed) + len(c.rejected) + len(c.capped),
        )


def new_run(**overrides) -> Run:
    settings = Settings(**{"retention_s": 120.0, "allowed_lateness_s": 5.0, "idle_timeout_s": 60.0,
                           "dedup_horizon_s": 120.0, **overrides})
    return Run(settings, Processor(settings, partitions=1))


def event_records(run: Run, event_id: str, start_s: float, attendees: int, duration_s: int,
                  heartbeat_s: int = 30) -> list[list[RawRecord]]:
    """One webinar as batches of 30 s of event time: lifecycle, joins, heartbeats, chats, a few duplicates,
    leaves, `ended`. Records carry ts = event time (ms)."""
    s = run.settings
    ti, te = s.topic_interactions, s.topic_events
    start = int(start_s * S)
    end = start + duration_s * S
    items: list[tuple[int, str, dict]] = [
        (start - 60 * S, te, {"event_id": event_id, "type": "scheduled", "ts": start - 60 * S,
                              "title": f"T {event_id}", "scheduled_start": start, "scheduled_end": end}),
        (start, te, {"event_id": event_id, "type": "started", "ts": start}),
    ]
    n = 0
    for a in range(attendees):
        aid = f"{event_id}-a{a}"
        items.append((start - 30 * S, ti, {"id": f"{event_id}-r{a}", "event_id": event_id, "attendee_id": aid,
                                           "type": "registration", "ts": start - 30 * S, "account_id": f"acc{a % 5}"}))
        join = start + (a * 7 % 60) * S
        leave = end - (a * 11 % 90) * S
        items.append((join, ti, {"id": f"{event_id}-j{a}", "event_id": event_id, "attendee_id": aid, "type": "join",
                                 "ts": join}))
        for t in range(join + heartbeat_s * S, leave, heartbeat_s * S):
            n += 1
            kind = "chat" if n % 9 == 0 else "heartbeat"
            items.append((t, ti, {"id": f"{event_id}-h{n}", "event_id": event_id, "attendee_id": aid, "type": kind,
                                  "ts": t}))
            if n % 50 == 0:  # an exact re-send
                items.append((t, ti, items[-1][2]))
        items.append((leave, ti, {"id": f"{event_id}-l{a}", "event_id": event_id, "attendee_id": aid,
                                  "type": "leave", "ts": leave}))
    items.append((end, te, {"event_id": event_id, "type": "ended", "ts": end}))
    items.sort(key=lambda x: x[0])
    batches: dict[int, list[RawRecord]] = {}
    for ts, topic, value in items:
        batches.setdefault(ts // (30 * S), []).append(run.rec(topic, value))
    return [batches[k] for k in sorted(batches)]


def play(run: Run, schedule: list[tuple[str, float, int, int]], *, until_s: float, tick_s: float = 30.0,
         sample=None) -> None:
    """Events (id, start_s, attendees, duration_s) played in wall time = event time, with a tick every `tick_s`
    (snapshots on), until wall time `until_s`. `sample(run)` is called after every tick. An event's records are
    generated shortly before it starts, so the input held by the test stays small whatever the schedule."""
    schedule = sorted(schedule, key=lambda e: e[1])
    pending: list[tuple[float, int, list[RawRecord]]] = []
    seq = 0
    j = 0
    wall = run.wall
    while wall <= until_s:
        while j < len(schedule) and schedule[j][1] - 300 <= wall:
            for batch in event_records(run, *schedule[j]):
                seq += 1
                heapq.heappush(pending, (orjson.loads(batch[-1].value)["ts"] / S, seq, batch))
            j += 1
        while pending and pending[0][0] <= wall:
            at, _, batch = heapq.heappop(pending)
            run.apply(run.processor.process(batch, max(wall, at)))
        run.apply(run.processor.tick(wall, snapshots=True))
        if sample is not None:
            sample(run)
        wall += tick_s
    run.wall = wall
