"""A realistic live webinar as a deterministic list of Kafka records (same seed, same bytes).

The shape follows what webinar marketers report: most registrations in the last week and a
quarter on the day itself, 40-50% of registrants attending, a join ramp at the start with early lobby joins and
late joiners, heartbeats every 30 s, chat bursts, polls, questions towards the end, a call-to-action moment, a
mid-event audience drop, attendees who vanish without a leave, reconnects (leave + rejoin, or a second device),
key-account attendees -- and the delivery faults LivePulse must absorb: exact duplicates, out-of-order delivery
within a bound (below the worker's allowed lateness), a few malformed records.

Framework-free and deterministic: everything comes from `random.Random` seeded by the config (never the global
random module, never the wall clock). `produce.py` sends the records to Kafka and writes/reads JSONL.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import count

import orjson

FIXED_START_MS = 1_768_489_200_000  # 2026-01-15T15:00:00Z: the default start, so that output is reproducible
DAY_MS = 86_400_000
LOBBY_MS = 300_000  # the lobby opens (earliest joins) 5 minutes before the start
CHANNELS = ("email", "email", "email", "social", "partner", "website", "sales", "paid_social")
# How the people each registration channel brings behave (attend: likelihood to attend, stay: to stay to the end
# once there), so that the figures per channel differ as marketers see them differ: partner and sales invitations
# attend more and stay, paid social attends least and leaves soonest. See _assign_channels.
CHANNEL_BEHAVIOUR = {
    "email": (0.45, 0.55),
    "social": (0.35, 0.45),
    "partner": (0.65, 0.75),
    "website": (0.5, 0.55),
    "sales": (0.6, 0.7),
    "paid_social": (0.25, 0.25),
}
# What promoting the webinar through each paid channel cost (the `scheduled` record's channel_costs).
CHANNEL_COSTS = {"paid_social": 1500, "partner": 1000, "social": 300, "email": 150}
CLIENTS = ("web", "web", "web", "mobile", "desktop")
# offsets of the RFC 3339 timestamps a share of clients send (the same instant written in local time)
OFFSETS = (0, 0, 60, -300, 330, 540)


@dataclass(frozen=True)
class SimRecord:
    topic: str  # "interactions" or "events" (mapped to the configured topic names when produced)
    key: bytes  # event_id, UTF-8
    value: bytes  # the record as sent: orjson bytes (or deliberately malformed bytes)
    ts: int  # event time (epoch ms) of the record; delivery order is the list order


@dataclass
class ScenarioConfig:
    seed: int = 7
    event_id: str | None = None  # default: webinar-<seed>
    registrants: int = 200
    duration_s: int = 1800
    start: int = FIXED_START_MS  # scheduled (and actual) start, epoch ms
    attend_rate: float = 0.45  # share of registrants who join live
    walk_in_rate: float = 0.05  # attendees without a registration, relative to registrants
    key_account_rate: float = 0.10  # registrants from one of the event's key accounts
    heartbeat_s: int = 30
    drop_at: float = 0.6  # when the mid-event drop happens (share of the duration)
    drop_fraction: float = 0.25  # share of the room leaving within a minute at drop_at
    vanish_rate: float = 0.15  # attendees whose client stops (heartbeats end, no leave record)
    reconnect_rate: float = 0.10  # attendees with a leave + rejoin or a second device
    late_join_rate: float = 0.15  # attendees joining after the first five minutes
    duplicate_rate: float = 0.02  # exact re-sends of a record (same id, same bytes)
    reorder_rate: float = 0.05  # records delivered late ...
    max_delay_s: float = 20.0  # ... by up to this much behind the newest record (keep < allowed lateness, 30 s)
    malformed_rate: float = 0.002  # extra broken records: invalid JSON, missing field, bad ts, unknown type
    rfc3339_rate: float = 0.05  # share of records stamped with an RFC 3339 string instead of epoch ms
    cost: float = 5000.0
    currency: str = "EUR"
    channel_costs: dict = field(default_factory=lambda: dict(CHANNEL_COSTS))  # {} sends none
    title: str | None = None
    extra: dict = field(default_factory=dict)  # merged into the `scheduled` record

    def __post_init__(self) -> None:
        if self.event_id is None:
            self.event_id = f"webinar-{self.seed}"
        if self.duration_s <= 0:
            raise ValueError("duration_s must be positive")
        if self.registrants < 0:
            raise ValueError("registrants must be >= 0")
        if self.heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be positive")
        if self.max_delay_s < 0:
            raise ValueError("max_delay_s must be >= 0")

    @property
    def eid(self) -> str:  # the event id (always set after __post_init__)
        return self.event_id  # type: ignore[return-value]

    @property
    def start_ms(self) -> int:  # alias of `start`
        return self.start

    @property
    def end(self) -> int:
        return self.start + self.duration_s * 1000

    @property
    def attendee_prefix(self) -> str:
        """Compact, per-event attendee ids: webinar-7 -> u7-12, webinar-7-3 -> u7-3-12, acme.q1 -> uacme.q1-12."""
        return "u" + self.event_id.removeprefix("webinar-") + "-"


class _Timeline:
    """Interaction records in event time, each with a compact unique id <event_id>-<n>."""

    def __init__(self, cfg: ScenarioConfig) -> None:
        self.cfg = cfg
        self.seq = count(1)
        self.items: list[tuple[int, int, dict]] = []  # (ts, n, record)

    def add(self, ts: int, attendee: str, kind: str, **fields: object) -> dict:
        n = next(self.seq)
        rec = {"id": f"{self.cfg.event_id}-{n}", "event_id": self.cfg.event_id, "attendee_id": attendee,
               "type": kind, "ts": int(ts), **fields}
        self.items.append((int(ts), n, rec))
        return rec


@dataclass
class _Person:
    attendee_id: str
    account: str | None
    key_account: bool
    registered: bool
    registration: dict | None = None  # their registration record (its channel is set once their behaviour is known)


def generate(cfg: ScenarioConfig) -> list[SimRecord]:
    """The records of one webinar in delivery order (duplicates, reordering and malformed records included)."""
    rng = random.Random(f"livepulse:{cfg.seed}:{cfg.event_id}")  # str seeds are stable across runs and versions
    tl = _Timeline(cfg)
    start, end = cfg.start, cfg.end
    dur = end - start
    key_accounts = [f"ka{i}" for i in range(max(1, cfg.registrants // 40))]
    other_accounts = [f"ac{i}" for i in range(max(1, cfg.registrants // 4))]

    lifecycle = [
        # announced two weeks ahead: before every registration
        {"event_id": cfg.event_id, "type": "scheduled", "ts": start - 15 * DAY_MS,
         "title": cfg.title or f"Webinar {cfg.event_id.removeprefix('webinar-')}",
         "scheduled_start": start, "scheduled_end": end, "cost": cfg.cost, "currency": cfg.currency,
         "key_accounts": key_accounts, **({"channel_costs": cfg.channel_costs} if cfg.channel_costs else {}),
         **cfg.extra},
        {"event_id": cfg.event_id, "type": "started", "ts": start},
        {"event_id": cfg.event_id, "type": "ended", "ts": end},
    ]

    # --- registrations: most in the last week, a quarter on the day itself ---------------------------------
    people: list[_Person] = []
    for i in range(cfg.registrants):
        key = rng.random() < cfg.key_account_rate
        account = rng.choice(key_accounts) if key else (rng.choice(other_accounts) if rng.random() < 0.6 else None)
        r = rng.random()
        if r < 0.25:
            ago = rng.randint(60_000, 10 * 3600_000)  # on the day
        elif r < 0.8:
            ago = rng.randint(DAY_MS // 2, 7 * DAY_MS)  # the last week
        else:
            ago = rng.randint(7 * DAY_MS, 14 * DAY_MS)  # early birds
        person = _Person(f"{cfg.attendee_prefix}{i}", account, key, True)
        fields: dict[str, object] = {"channel": rng.choice(CHANNELS)}  # (drawn, then replaced by _assign_channels)
        if account:
            fields["account_id"] = account
        person.registration = tl.add(start - ago, person.attendee_id, "registration", **fields)
        people.append(person)
    for i in range(round(cfg.registrants * cfg.walk_in_rate)):
        people.append(_Person(f"{cfg.attendee_prefix}w{i}", None, False, False))

    # --- the live session --------------------------------------------------------------------------------
    polls = [("p1", start + int(dur * 0.35))]
    if dur >= 15 * 60_000:
        polls.append(("p2", start + int(dur * 0.7)))
    cta_at = start + int(dur * 0.85)
    qa_from = start + int(dur * 0.75)  # the Q&A segment near the end
    drop_at = start + int(dur * cfg.drop_at)
    hb = cfg.heartbeat_s * 1000

    ramp = min(300_000, dur // 3)  # the join ramp: the first five minutes (a third of a short session)
    attendees: list[tuple[_Person, int]] = []
    for p in people:
        if p.registered and rng.random() >= cfg.attend_rate:
            continue  # a no-show
        r = rng.random()
        if r < 0.15:
            join = start - rng.randint(0, LOBBY_MS)  # early, in the lobby
        elif r < 1 - cfg.late_join_rate:
            join = start + int(rng.expovariate(1 / 60_000)) % ramp  # the ramp: most in the first minutes
        else:
            join = start + rng.randint(ramp, max(ramp + 1, int(dur * 0.7)))  # late joiners
        attendees.append((p, join))

    stayed: dict[str, bool] = {}
    for p, join in attendees:
        # when they go, and how
        r = rng.random()
        vanish = rng.random() < cfg.vanish_rate
        if join < drop_at and rng.random() < cfg.drop_fraction:
            depart = drop_at + rng.randint(0, 60_000)  # the mid-event drop: a boring segment, a broken stream
        elif vanish or r < 0.25:  # leaves early -- or their client dies (a closed lid, a crashed tab) -- any time
            depart = rng.randint(min(join + 60_000, end), end)
        else:
            depart = end + rng.randint(-240_000, 60_000)  # stays to the end (a few stay past `ended`)
        depart = max(depart, join + 30_000)
        stayed[p.attendee_id] = depart >= end - 240_000

        # sessions: (from, to, leave record at `to`?)
        sessions: list[tuple[int, int, bool]] = []
        devices = [{"client": rng.choice(CLIENTS)}]
        if rng.random() < cfg.reconnect_rate and depart - join > 300_000:
            gap_at = rng.randint(join + 60_000, depart - 180_000)
            if rng.random() < 0.5:  # the connection drops, they come back (new join)
                back = gap_at + rng.randint(5_000, 90_000)
                sessions = [(join, gap_at, True), (back, depart, not vanish)]
            else:  # a second device joins too; no leave in between
                sessions = [(join, depart, not vanish)]
                devices.append({"client": "mobile" if devices[0]["client"] != "mobile" else "web", "at": gap_at})
        else:
            sessions = [(join, depart, not vanish)]

        flags: dict[str, object] = {}
        if p.account:
            flags["account_id"] = p.account
            if p.key_account and rng.random() < 0.5:
                flags["key_account"] = True
        for n, (s_from, s_to, leaves) in enumerate(sessions):
            tl.add(s_from, p.attendee_id, "join", client=devices[0]["client"], **(flags if n == 0 else {}))
            t = s_from + rng.randint(1_000, hb)
            while t < s_to:
                tl.add(t, p.attendee_id, "heartbeat")
                t += hb + rng.randint(-1_500, 1_500)
            if leaves:
                tl.add(s_to, p.attendee_id, "leave")
        for d in devices[1:]:
            tl.add(d["at"], p.attendee_id, "join", client=d["client"])

        def present(t: int, sessions: list = sessions) -> bool:
            return any(a < t < b for a, b, _ in sessions)

        # chat: some attendees are chatty, most are quiet
        chattiness = rng.random() ** 2
        for minute in range(join // 60_000, min(depart, end) // 60_000 + 1):
            if rng.random() < chattiness * 0.15:
                t = minute * 60_000 + rng.randint(0, 59_999)
                if present(t):
                    tl.add(t, p.attendee_id, "chat")
            if rng.random() < 0.02:
                t = minute * 60_000 + rng.randint(0, 59_999)
                if present(t):
                    tl.add(t, p.attendee_id, "reaction")
        # polls: most of the room votes within a minute and a half
        for n, (poll_id, poll_at) in enumerate(polls):
            if present(poll_at) and rng.random() < (0.75 if n == 0 else 0.6):
                t = poll_at + int(rng.expovariate(1 / 20_000)) % 90_000 + 1_000
                if present(t):
                    tl.add(t, p.attendee_id, "poll_vote", poll_id=poll_id)
        # questions: mostly in the Q&A segment
        if rng.random() < 0.15:
            t = rng.randint(qa_from, end) if rng.random() < 0.7 else rng.randint(start, end)
            if present(t):
                tl.add(t, p.attendee_id, "question")
        # the call to action
        if present(cta_at) and rng.random() < 0.2:
            t = cta_at + int(rng.expovariate(1 / 30_000)) % 180_000 + 1_000
            if present(t):
                tl.add(t, p.attendee_id, "cta_click", cta_id="cta-demo")

    # chat bursts: greetings at the start, reactions to the polls
    for burst_at, size in [(start + 60_000, 0.15)] + [(at, 0.1) for _, at in polls]:
        for p, join in rng.sample(attendees, k=int(len(attendees) * size)):
            t = burst_at + rng.randint(0, 120_000)
            if join < t < end:
                tl.add(t, p.attendee_id, "chat" if rng.random() < 0.7 else "reaction")

    _assign_channels(cfg, people, stayed)
    return _deliver(cfg, rng, tl, lifecycle)


def _assign_channels(cfg: ScenarioConfig, people: list[_Person], stayed: dict[str, bool]) -> None:
    """Give each registration a channel by what its person did: drawn with weights share in CHANNELS x attend
    (attended) or 1 - attend (no-show), x stay or 1 - stay (stayed to the end or not), so that partner
    registrants attend and stay more and paid social ones less. Drawn from a generator of its own, after the
    fact: everything else about the webinar is what it would be without channels."""
    rng = random.Random(f"livepulse:channels:{cfg.seed}:{cfg.event_id}")
    names = sorted(CHANNEL_BEHAVIOUR)
    prior = {c: CHANNELS.count(c) for c in names}
    for p in people:
        if p.registration is None:
            continue
        if p.attendee_id not in stayed:
            weights = [prior[c] * (1 - CHANNEL_BEHAVIOUR[c][0]) for c in names]
        else:
            attend, stay = zip(*(CHANNEL_BEHAVIOUR[c] for c in names))
            weights = [prior[c] * a * (s if stayed[p.attendee_id] else 1 - s)
                       for c, a, s in zip(names, attend, stay)]
        p.registration["channel"] = rng.choices(names, weights)[0]


def _stamp(ts: int, rng: random.Random, rate: float) -> int | str:
    """Epoch ms, or for a share of records the same instant as RFC 3339 in some local offset."""
    if rate and rng.random() < rate:
        tz = timezone(timedelta(minutes=rng.choice(OFFSETS)))
        return datetime.fromtimestamp(ts / 1000, tz=tz).isoformat(timespec="milliseconds")
    return ts


def _deliver(cfg: ScenarioConfig, rng: random.Random, tl: _Timeline, lifecycle: list[dict]) -> list[SimRecord]:
    """The timeline in delivery order: event-time order, except that a share of records is held back by up to
    max_delay (a record held back by d ms is delivered once records up to ts + d went out, so it is never more
    than max_delay behind the newest record delivered before it); duplicates are re-sent within the same bound;
    malformed records go out next to the record they were broken from."""
    key = cfg.event_id.encode()
    max_delay = int(cfg.max_delay_s * 1000)
    staged: list[tuple[int, int, SimRecord]] = []  # (delivery time, sequence, record)
    seq = count()
    for rec in lifecycle:
        # lifecycle records go out on time; the scheduled one first of all
        staged.append((rec["ts"], -1 if rec["type"] == "scheduled" else next(seq),
                       SimRecord("events", key, orjson.dumps(rec), rec["ts"])))
    for ts, _, rec in sorted(tl.items):
        rec["ts"] = _stamp(ts, rng, cfg.rfc3339_rate)
        value = orjson.dumps(rec)
        deliver = ts
        if max_delay and rng.random() < cfg.reorder_rate:
            deliver += rng.randint(1_000, max_delay) if max_delay > 1_000 else max_delay
        staged.append((deliver, next(seq), SimRecord("interactions", key, value, ts)))
        if rng.random() < cfg.duplicate_rate:  # an at-least-once re-send: the same bytes, a little later
            staged.append((rng.randint(deliver, ts + max_delay), next(seq), SimRecord("interactions", key, value, ts)))
        if rng.random() < cfg.malformed_rate:
            staged.append((deliver, next(seq), SimRecord("interactions", key, _malformed(rec, rng), ts)))
    staged.sort(key=lambda s: (s[0], s[1]))
    return [s[2] for s in staged]


def _malformed(rec: dict, rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return orjson.dumps(rec)[:-9]  # truncated: invalid JSON
    if kind == 1:
        return orjson.dumps({k: v for k, v in rec.items() if k != "attendee_id"})  # a required field missing
    if kind == 2:
        return orjson.dumps(dict(rec, ts="last tuesday"))  # a bad timestamp
    return orjson.dumps(dict(rec, type="teleport"))  # an unknown type


def generate_many(cfgs: list[ScenarioConfig]) -> list[SimRecord]:
    """Several concurrent webinars interleaved by event time. Each event keeps its own delivery order (so its
    bounded reordering is unchanged); events are merged on the running max ts of each stream, which is
    non-decreasing, so the merge is exact and stable (ties go to the earlier config)."""
    ids = [c.event_id for c in cfgs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"event ids must be distinct: {ids}")

    def keyed(records: list[SimRecord]):
        running = None
        for rec in records:
            running = rec.ts if running is None else max(running, rec.ts)
            yield running, rec

    merged = heapq.merge(*(keyed(generate(c)) for c in cfgs), key=lambda pair: pair[0])
    return [rec for _, rec in merged]


def concurrent_events(seed: int, events: int, **overrides: object) -> list[ScenarioConfig]:
    """`events` webinars starting up to five minutes apart, sizes varying +-50% around `registrants`
    (one event: exactly the ScenarioConfig of the seed, event id webinar-<seed>)."""
    if events == 1:
        if "start_ms" in overrides:
            overrides["start"] = overrides.pop("start_ms")
        return [ScenarioConfig(seed=seed, **overrides)]
    rng = random.Random(f"livepulse:events:{seed}")
    base = int(overrides.pop("registrants", 200))
    start = int(overrides.pop("start", overrides.pop("start_ms", FIXED_START_MS)))
    return [
        ScenarioConfig(seed=seed, event_id=f"webinar-{seed}-{n}", registrants=max(1, int(base * rng.uniform(0.5, 1.5))),
                       start=start + rng.randint(0, 300) * 1000, **overrides)
        for n in range(events)
    ]
