"""A realistic live webinar as a deterministic list of Kafka records (same seed, same bytes).

The shape follows what webinar marketers report (shared/README.md): most registrations in the last days, about
40-50% of registrants attend, a join ramp at the start with some early lobby joins and late joiners, heartbeats
every 30 s, chat bursts, polls, questions towards the end, a call-to-action moment, a mid-event audience drop,
attendees who vanish without a leave, reconnects from a second device, key-account attendees -- and the delivery
faults LivePulse must absorb: duplicates, out-of-order delivery within a bound, a few malformed records.

Framework-free: no Kafka here; `produce.py` sends the records, `write_jsonl` records them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson

FIXED_START_MS = 1_768_489_200_000  # 2026-01-15T15:00:00Z: the default, so that output is reproducible
DAY_MS = 86_400_000
CHANNELS = ("email", "email", "email", "social", "partner", "website", "sales")
CLIENTS = ("web", "web", "web", "mobile", "desktop-app")


@dataclass(frozen=True)
class SimRecord:
    topic: str  # "interactions" or "events" (mapped to the configured topic names when produced)
    key: bytes
    value: bytes
    ts: int  # event time of the record; delivery order is the list order


@dataclass
class ScenarioConfig:
    seed: int = 7
    event_id: str | None = None  # default: webinar-<seed>
    registrants: int = 200
    duration_s: int = 1800
    start_ms: int = FIXED_START_MS
    attend_rate: float = 0.45  # share of registrants who join live
    walk_in_rate: float = 0.05  # attendees without registration, relative to registrants
    key_account_rate: float = 0.10  # attendees from the event's key accounts
    drop_at: float = 0.6  # when the mid-event drop happens (share of the duration)
    drop_fraction: float = 0.25  # share of the room leaving within a minute at drop_at
    vanish_rate: float = 0.15  # attendees who stop without a leave record
    reconnect_rate: float = 0.10  # attendees with a leave + rejoin or a second device
    heartbeat_s: int = 30
    duplicate_rate: float = 0.02
    reorder_rate: float = 0.05
    max_delay_s: float = 20.0  # out-of-order bound; keep it below the worker's allowed lateness (30 s)
    malformed_rate: float = 0.002
    rfc3339_rate: float = 0.05  # share of records stamped with an RFC 3339 string instead of epoch ms
    cost: float = 5000.0
    currency: str = "EUR"
    title: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def eid(self) -> str:
        return self.event_id or f"webinar-{self.seed}"


class _Builder:
    def __init__(self, cfg: ScenarioConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(f"livepulse-{cfg.seed}-{cfg.eid}")
        self.n = 0
        self.items: list[tuple[int, int, dict]] = []  # (ts, sequence, record)

    def add(self, ts: int, attendee: str, kind: str, **fields) -> None:
        self.n += 1
        rec = {"id": f"{self.cfg.eid}-{self.n}", "event_id": self.cfg.eid, "attendee_id": attendee, "type": kind,
               "ts": int(ts), **fields}
        self.items.append((int(ts), self.n, rec))


def _stamp(ts: int, rng: random.Random, rate: float) -> int | str:
    if rng.random() < rate:
        return datetime.fromtimestamp(ts / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
    return ts


def generate(cfg: ScenarioConfig) -> list[SimRecord]:
    """The records of one webinar in delivery order."""
    b = _Builder(cfg)
    rng = b.rng
    start, dur = cfg.start_ms, cfg.duration_s * 1000
    end = start + dur
    eid = cfg.eid
    n_key = max(1, cfg.registrants // 50)
    key_accounts = [f"acct-key-{i}" for i in range(n_key)]
    other_accounts = [f"acct-{i}" for i in range(max(1, cfg.registrants // 5))]

    events = [
        (start - 14 * DAY_MS, {"event_id": eid, "type": "scheduled", "ts": start - 14 * DAY_MS,
                               "title": cfg.title or f"Webinar {cfg.seed}", "scheduled_start": start,
                               "scheduled_end": end, "cost": cfg.cost, "currency": cfg.currency,
                               "key_accounts": key_accounts}),
        (start, {"event_id": eid, "type": "started", "ts": start}),
        (end, {"event_id": eid, "type": "ended", "ts": end}),
    ]

    people = []
    for i in range(cfg.registrants):
        aid = f"u{cfg.seed}-{i}"
        key = rng.random() < cfg.key_account_rate
        account = rng.choice(key_accounts) if key else (rng.choice(other_accounts) if rng.random() < 0.6 else None)
        # most registrations in the last week, a quarter on the day itself
        ago = rng.uniform(0, 6 * 3600_000) if rng.random() < 0.25 else rng.uniform(DAY_MS, 14 * DAY_MS) \
            if rng.random() < 0.3 else rng.uniform(3600_000, 7 * DAY_MS)
        extra = {"channel": rng.choice(CHANNELS)}
        if account:
            extra["account_id"] = account
        b.add(start - int(ago), aid, "registration", **extra)
        people.append((aid, account, rng.random() < cfg.attend_rate))
    for i in range(int(cfg.registrants * cfg.walk_in_rate)):
        people.append((f"w{cfg.seed}-{i}", None, True))

    poll_times = [start + int(dur * 0.4), start + int(dur * 0.75)]
    cta_time = start + int(dur * 0.85)
    drop_time = start + int(dur * cfg.drop_at)
    for aid, account, attends in people:
        if not attends:
            continue
        r = rng.random()
        join = start - rng.randint(0, 300_000) if r < 0.15 else \
            start + rng.randint(0, 300_000) if r < 0.85 else start + rng.randint(300_000, max(300_001, dur // 2))
        if rng.random() < cfg.drop_fraction and join < drop_time:
            leave = drop_time + rng.randint(0, 60_000)
        elif rng.random() < 0.3:
            leave = rng.randint(join + 60_000, max(join + 60_001, end))
        else:
            leave = end + rng.randint(-180_000, 60_000)  # near the end; some after `ended`
        vanish = rng.random() < cfg.vanish_rate
        flags = {"client": rng.choice(CLIENTS)}
        if account:
            flags["account_id"] = account
            if account.startswith("acct-key") and rng.random() < 0.5:
                flags["key_account"] = True
        b.add(join, aid, "join", **flags)
        if rng.random() < cfg.reconnect_rate and leave - join > 240_000:
            gap_at = rng.randint(join + 60_000, leave - 120_000)
            if rng.random() < 0.5:  # connection lost, comes back
                b.add(gap_at, aid, "leave")
                b.add(gap_at + rng.randint(5_000, 90_000), aid, "join")
            else:  # second device, no leave in between
                b.add(gap_at, aid, "join", client="mobile")
        t = join + rng.randint(1_000, cfg.heartbeat_s * 1000)
        while t < leave:
            b.add(t, aid, "heartbeat")
            t += cfg.heartbeat_s * 1000 + rng.randint(-2_000, 2_000)
        chattiness = rng.random()
        for minute in range(join // 60_000, min(leave, end) // 60_000 + 1):
            if rng.random() < chattiness * 0.08:
                t = minute * 60_000 + rng.randint(0, 59_999)
                if join < t < leave:
                    b.add(t, aid, "chat")
            if rng.random() < 0.02:
                t = minute * 60_000 + rng.randint(0, 59_999)
                if join < t < leave:
                    b.add(t, aid, "reaction")
        for n, poll_at in enumerate(poll_times, 1):
            if join < poll_at < leave and rng.random() < (0.75 if n == 1 else 0.6):
                b.add(poll_at + rng.randint(2_000, 90_000), aid, "poll_vote", poll_id=f"poll-{n}")
        if rng.random() < 0.12:
            t = rng.randint(max(join, start + int(dur * 0.6)), max(max(join, start + int(dur * 0.6)) + 1, leave))
            if t < leave:
                b.add(t, aid, "question")
        if join < cta_time < leave and rng.random() < 0.2:
            b.add(cta_time + rng.randint(1_000, 120_000), aid, "cta_click", cta_id="cta-demo")
        if not vanish and leave <= end + 60_000:
            b.add(leave, aid, "leave")

    # chat burst around the first poll: a few extra messages from people in the room
    for _ in range(max(1, len(people) // 10)):
        aid, _, attends = rng.choice(people)
        if attends:
            b.add(poll_times[0] + rng.randint(0, 120_000), aid, "chat")

    return _deliver(cfg, b, events)


def _deliver(cfg: ScenarioConfig, b: _Builder, events: list[tuple[int, dict]]) -> list[SimRecord]:
    """Turn the timeline into delivery order: sort, delay some records (bounded), duplicate some, add malformed."""
    rng = b.rng
    key = cfg.eid.encode()
    max_delay = int(cfg.max_delay_s * 1000)
    timeline = sorted(b.items)
    staged: list[tuple[int, int, int, SimRecord]] = []  # (delivery time, ts, tiebreak, record)
    seq = 0
    for ts, _, rec in timeline:
        rec = dict(rec, ts=_stamp(ts, rng, cfg.rfc3339_rate))
        value = orjson.dumps(rec)
        deliver = ts + (rng.randint(1, max_delay) if max_delay and rng.random() < cfg.reorder_rate else 0)
        seq += 1
        staged.append((deliver, ts, seq, SimRecord("interactions", key, value, ts)))
        if rng.random() < cfg.duplicate_rate:  # redelivered copy, a little later
            seq += 1
            again = min(ts + max_delay, deliver + rng.randint(0, max_delay // 2))
            staged.append((again, ts, seq, SimRecord("interactions", key, value, ts)))
        if rng.random() < cfg.malformed_rate:
            seq += 1
            staged.append((deliver, ts, seq, SimRecord("interactions", key, _malformed(rec, rng), ts)))
    for ts, rec in events:
        seq += 1
        staged.append((ts, ts, seq, SimRecord("events", key, orjson.dumps(rec), ts)))
    staged.sort(key=lambda s: (s[0], s[2]))
    return [s[3] for s in staged]


def _malformed(rec: dict, rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return orjson.dumps(rec)[:-7]  # truncated JSON
    if kind == 1:
        return orjson.dumps({k: v for k, v in rec.items() if k != "attendee_id"})
    if kind == 2:
        return orjson.dumps(dict(rec, ts="last tuesday"))
    return orjson.dumps(dict(rec, type="teleport"))


def generate_many(cfgs: list[ScenarioConfig]) -> list[SimRecord]:
    """Several concurrent webinars, merged by event time (stable: the same inputs give the same order)."""
    merged = []
    for n, cfg in enumerate(cfgs):
        merged.extend((rec.ts, n, i, rec) for i, rec in enumerate(generate(cfg)))
    # keep each event's own delivery order (which may be out of ts order) while interleaving events
    by_event: list[list[SimRecord]] = [[] for _ in cfgs]
    for _, n, _, rec in sorted(merged, key=lambda m: (m[1], m[2])):
        by_event[n].append(rec)
    out, heads = [], [0] * len(cfgs)
    while True:
        best = None
        for n, recs in enumerate(by_event):
            if heads[n] < len(recs) and (best is None or recs[heads[n]].ts < by_event[best][heads[best]].ts):
                best = n
        if best is None:
            return out
        out.append(by_event[best][heads[best]])
        heads[best] += 1


def concurrent_events(seed: int, events: int, **overrides) -> list[ScenarioConfig]:
    """`events` webinars starting a few minutes apart, sizes varying around `registrants`."""
    rng = random.Random(seed)
    base = overrides.pop("registrants", 200)
    start = overrides.pop("start_ms", FIXED_START_MS)
    return [
        ScenarioConfig(seed=seed, event_id=f"webinar-{seed}-{n}" if events > 1 else None,
                       registrants=max(1, int(base * rng.uniform(0.5, 1.5))) if events > 1 else base,
                       start_ms=start + n * rng.randint(0, 300) * 1000, **overrides)
        for n in range(events)
    ]
