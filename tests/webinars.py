"""A compact random webinar generator for the reference-equality tests (seeded `random.Random`, no simulator).

`webinar()` writes the true history of one event (lifecycle records and interactions, in event time): joins,
heartbeats, chats, questions, polls, reactions, CTA clicks, reconnects (some at the very same ms), idle gaps
longer than the timeout, vanishing clients, a mid-event drop, registrations (no-shows included), walk-ins,
key accounts by flag and by the event's list, records after `ended`, joins after `ended`, leaves without a join.
`deliver()` turns histories into an ARRIVAL order: bounded reordering (every record's ts >= the running max ts -
`max_delay_ms`), exact re-sends of records (duplicates), optionally records delayed beyond the lateness, and
`ended` running ahead on the events topic. `to_raw()` makes Kafka records of it (partitioned by event_id,
offsets per topic-partition, some `ts` as RFC 3339 strings, optional malformed records).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import orjson

from streams.partitioning import partition_for
from streams.processor import RawRecord
from streams.settings import Settings

T0 = 1_768_435_200_000  # 2026-01-15T00:00:00Z, minute aligned
NOW_S = T0 // 1000 + 3 * 86_400  # wall clock of the tests (ts must not be a day ahead of it)
S = 1000
SETTINGS = Settings()
TOPIC = {"interaction": SETTINGS.topic_interactions, "event": SETTINGS.topic_events}
ACCOUNTS = ("acme", "globex", "initech", "umbrella", "hooli")


@dataclass
class Shape:
    attendees: int = 15
    duration_s: int = 900
    register_rate: float = 0.7  # attendees (present or not) who registered
    no_shows: int = 3  # extra registrants who never come
    started: bool = True  # send a `started` record
    key_accounts: tuple = ("acme",)  # on `scheduled`; `started` adds "globex"
    vanish_rate: float = 0.15
    gap_rate: float = 0.03  # per heartbeat: a silence longer than the idle timeout
    reconnect_rate: float = 0.04  # per heartbeat: leave + rejoin (same ms or a few seconds later)
    drop_fraction: float = 0.3  # share leaving around 60 % of the duration
    stay_rate: float = 0.3  # share still there at the end (records after `ended` too)
    oddballs: bool = True  # leave-only, join-after-ended, join+leave same ms, chat-only attendees
    extra_lifecycle: bool = True  # a second `started` (later ts) and a second `ended` (later, ignored)
    # delivery
    dup_rate: float = 0.03
    reorder_rate: float = 0.3
    max_delay_ms: int = 29_000
    late_rate: float = 0.0  # records delayed 31..300 s (really late)
    ended_ahead_ms: int = 0  # deliver `ended` up to this much before its ts is reached


def _money(seed: int, event_id: str) -> dict:
    """Cost and organiser metadata on most events (some have none: the cost figures must then be null).
    A separate generator, so that the rest of the history is what it was before these fields existed."""
    rnd = random.Random(f"{seed}-{event_id}")
    if rnd.random() < 0.2:
        return {}
    money = {"cost": rnd.choice([0, 1500, 4999.5, 12000]), "currency": rnd.choice(["EUR", "USD"]),
             "organizer_id": rnd.choice(["org-a", "org-b"])}
    if rnd.random() < 0.7:  # costs of some channels, one nobody registers through ("ads"), one free
        channels = rnd.sample(("email", "linkedin", "partner", "ads", "unknown"), rnd.randint(1, 4))
        money["channel_costs"] = {c: rnd.choice([0, 250, 1200.5]) for c in channels}
    return money


def webinar(rnd: random.Random, event_id: str, t0: int, shape: Shape) -> list[tuple[str, dict]]:
    """The true history of one event: [(kind, record)] sorted by ts."""
    out: list[tuple[str, dict]] = []
    end = t0 + shape.duration_s * S
    n = 0

    def life(kind: str, ts: int, **extra) -> None:
        out.append(("event", {"event_id": event_id, "type": kind, "ts": ts, **extra}))

    life("scheduled", t0 - 2 * 86_400_000 + rnd.randrange(S), title=f"Webinar {event_id}",
         key_accounts=list(shape.key_accounts), **_money(shape.duration_s, event_id))
    if shape.started:
        life("started", t0 + rnd.randrange(2 * S), key_accounts=["globex"])
        if shape.extra_lifecycle:
            life("started", t0 + 40 * S)
    life("ended", end)
    if shape.extra_lifecycle:
        life("ended", end + 90 * S)

    def person(aid: str, account: str | None, key_flag: bool, registered: bool, channel: str | None):
        def rec(kind: str, ts: int, **extra) -> None:
            nonlocal n
            n += 1
            r = {"id": f"{aid}-{n}", "event_id": event_id, "attendee_id": aid, "type": kind, "ts": ts, **extra}
            if account is not None:
                r["account_id"] = account
            if key_flag and rnd.random() < 0.3:
                r["key_account"] = True
            if rnd.random() < 0.2:
                r["client"] = rnd.choice(("web", "ios", "android"))
            out.append(("interaction", r))
        if registered:
            when = t0 - rnd.randrange(3 * 86_400_000) if rnd.random() < 0.8 else t0 + rnd.randrange(300 * S)
            rec("registration", when, **({"channel": channel} if channel else {}))
            if rnd.random() < 0.1:  # registered twice (another id): one registrant all the same
                rec("registration", when + rnd.randrange(1, 60 * S))
        return rec

    n_polls = rnd.randint(0, 3)
    for i in range(shape.attendees):
        aid = f"a{i}"
        account = rnd.choice((None,) + ACCOUNTS)
        rec = person(aid, account, rnd.random() < 0.1, rnd.random() < shape.register_rate,
                     rnd.choice((None, "email", "linkedin", "partner")))
        t = rnd.randint(t0 - 120 * S, t0 + int(0.8 * shape.duration_s * S))
        rec("join", t)
        if rnd.random() < 0.05:
            rec("join", t + rnd.randrange(10 * S))  # a second device
        vanish = rnd.random() < shape.vanish_rate
        if rnd.random() < shape.drop_fraction:
            stop = t0 + int(0.6 * shape.duration_s * S) + rnd.randrange(-30 * S, 30 * S)
        elif rnd.random() < shape.stay_rate:
            stop = end + rnd.randrange(60 * S)
        else:
            stop = rnd.randint(t, end + 10 * S)
        while True:
            r = rnd.random()
            if r < shape.gap_rate:
                t += rnd.randint(121 * S, 260 * S)  # idle timeout, then back without a join
            else:
                t += 30 * S + rnd.randrange(-3 * S, 3 * S)
            if t >= stop:
                break
            rec("heartbeat", t)
            if r > 1 - shape.reconnect_rate:
                rec("leave", t + 1)
                rec("join", t + 1 if rnd.random() < 0.5 else t + rnd.randint(2 * S, 60 * S))
            for kind, p, extra in (("chat", 0.15, {}), ("question", 0.04, {}), ("reaction", 0.1, {}),
                                   ("poll_vote", 0.05, {"poll_id": f"p{rnd.randrange(max(1, n_polls))}"}),
                                   ("cta_click", 0.03, {"cta_id": "buy"})):
                if rnd.random() < p and (kind != "poll_vote" or n_polls):
                    rec(kind, t + rnd.randrange(1, 29 * S), **extra)
        if not vanish:
            rec("leave", min(stop, t))
    for j in range(shape.no_shows):
        person(f"r{j}", rnd.choice((None,) + ACCOUNTS), False, True, rnd.choice((None, "email")))
    if shape.oddballs:
        person("leave-only", None, False, False, None)("leave", t0 + rnd.randrange(shape.duration_s * S))
        person("after-end", "acme", False, True, "email")("join", end + rnd.randint(1, 20 * S))
        same = person("same-ms", None, True, False, None)
        ts = t0 + rnd.randrange(shape.duration_s * S)
        same("join", ts)
        same("leave", ts)  # sorts before the join: present until the idle timeout
        chatty = person("chat-only", "initech", False, False, None)
        ts = t0 + rnd.randrange(shape.duration_s * S)
        chatty("chat", ts)
        chatty("chat", ts + 5 * S)
        chatty("reaction", ts + 6 * S)
        chatty("leave", ts + 7 * S)
    out.sort(key=lambda kr: kr[1]["ts"])
    return out


def deliver(history: list[tuple[str, dict]], rnd: random.Random, shape: Shape) -> list[tuple[int, str, dict]]:
    """(delivery key, kind, record): sorting by the key gives an arrival order in which every record's
    ts >= (max ts delivered before it) - max_delay_ms, except the deliberately late ones."""
    keyed = []
    for kind, r in history:
        key = r["ts"]
        if kind == "event" and r["type"] == "ended" and shape.ended_ahead_ms:
            key -= rnd.randrange(shape.ended_ahead_ms)
        elif rnd.random() < shape.late_rate and kind == "interaction":
            key += rnd.randint(31 * S, 300 * S)
        elif rnd.random() < shape.reorder_rate:
            key += rnd.randint(0, shape.max_delay_ms)
        keyed.append((key, kind, r))
        if kind == "interaction" and rnd.random() < shape.dup_rate:  # an exact re-send, also bounded
            keyed.append((r["ts"] + rnd.randint(0, shape.max_delay_ms), kind, r))
    return keyed


def arrival(*delivered: list[tuple[int, str, dict]]) -> list[tuple[str, dict]]:
    """Merge the deliveries of several events into one arrival order (stable on ties)."""
    merged = [(key, i, kind, r) for i, (key, kind, r) in enumerate(x for d in delivered for x in d)]
    merged.sort(key=lambda m: (m[0], m[1]))
    return [(kind, r) for _, _, kind, r in merged]


def scenario(seed: int, shapes: dict[str, Shape], spread_s: int = 300) -> list[tuple[str, dict]]:
    """Events named by `shapes`, starting within `spread_s` of each other, interleaved by arrival."""
    rnd = random.Random(seed)
    deliveries = []
    for event_id, shape in shapes.items():
        t0 = T0 + rnd.randrange(spread_s * S)
        deliveries.append(deliver(webinar(rnd, event_id, t0, shape), rnd, shape))
    return arrival(*deliveries)


def _rfc3339(ts: int, rnd: random.Random) -> str:
    tz = timezone(timedelta(minutes=rnd.choice((0, 60, -300, 330))))
    t = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ts)).astimezone(tz)
    return t.isoformat(timespec="milliseconds")


def to_raw(arrivals: list[tuple[str, dict]], partitions: int = 1, *, seed: int = 0, rfc3339_rate: float = 0.1,
           malformed_rate: float = 0.0) -> list[RawRecord]:
    """Kafka records in arrival order: key = event_id, partition by the default partitioner, offsets per
    topic-partition; some ts as RFC 3339 strings, some extra malformed records (dead letters)."""
    rnd = random.Random(seed)
    offsets: dict[tuple, int] = {}
    out = []

    def emit(topic: str, key: bytes, value: bytes) -> None:
        part = partition_for(key, partitions)
        offsets[(topic, part)] = offsets.get((topic, part), -1) + 1
        out.append(RawRecord(topic, part, offsets[(topic, part)], key, value))

    for kind, r in arrivals:
        key = r["event_id"].encode()
        if rnd.random() < malformed_rate:
            emit(TOPIC[kind], key, rnd.choice((b"{not json", b"[]", orjson.dumps({**r, "ts": "yesterday"}),
                                               orjson.dumps({**r, "type": "teleport"}))))
        value = dict(r)
        if rnd.random() < rfc3339_rate:
            value["ts"] = _rfc3339(r["ts"], rnd)
        emit(TOPIC[kind], key, orjson.dumps(value))
    return out


@dataclass
class Case:
    """A hand-written arrival list (edge cases)."""

    arrivals: list = field(default_factory=list)
    n: int = 0

    def i(self, aid: str, kind: str, at_s: float, event_id: str = "ev", rid: str | None = None, **extra) -> Case:
        self.n += 1
        self.arrivals.append(("interaction", {"id": rid or f"i{self.n}", "event_id": event_id, "attendee_id": aid,
                                              "type": kind, "ts": T0 + round(at_s * S), **extra}))
        return self

    def life(self, kind: str, at_s: float, event_id: str = "ev", **extra) -> Case:
        self.arrivals.append(("event", {"event_id": event_id, "type": kind, "ts": T0 + round(at_s * S), **extra}))
        return self
