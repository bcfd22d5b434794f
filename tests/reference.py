"""The batch reference: every output of LivePulse computed the obvious way from the complete list of records.

Slow on purpose and independent of `streams.domain` (nothing is imported from it): each rule of the semantics
(docs/semantics.md) is transcribed directly -- classify every arrival (duplicate / late / kept), fold each
attendee's sorted presence records into sessions, then evaluate the audience step function
attendees_current(t) at every instant that matters, and count. The streaming worker must agree with it exactly;
tests/test_reference_equality.py and tests/integration compare the two.

Input: `reference(arrivals, params)` with `arrivals` = [("interaction" | "event", decoded dict)] in ARRIVAL order
(any number of events interleaved; `ts` already int epoch ms). Output: {event_id: EventResult} for every event
that has an `ended` record: the summary, the minute windows, the leads (sorted by attendee_id), every session,
and the expected Prometheus event series.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

MINUTE = 60_000
TYPES = ("registration", "join", "leave", "heartbeat", "chat", "question", "poll_vote", "reaction", "cta_click")
LEAD_TYPES = ("join", "leave", "heartbeat", "chat", "question", "poll_vote", "reaction", "cta_click")
WINDOW_COUNTS = {"heartbeat": "heartbeats", "chat": "chats", "question": "questions", "poll_vote": "poll_votes",
                 "reaction": "reactions", "cta_click": "cta_clicks"}
SESSION_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 5400, 7200)


@dataclass
class Params:
    idle_ms: int = 120_000
    lateness_ms: int = 30_000
    horizon_ms: int = 600_000
    drop_ratio: float = 0.1
    weights: tuple = (40.0, 15.0, 15.0, 15.0, 15.0)  # dwell, chat, question, poll, cta
    grades: tuple = (70.0, 50.0, 25.0)  # lowest score of A, B, C
    max_channels: int = 20  # named registration channels per event; the rest are `other`

    @classmethod
    def from_settings(cls, s) -> Params:
        w = s.score
        return cls(int(s.idle_timeout_s * 1000), int(s.allowed_lateness_s * 1000), int(s.dedup_horizon_s * 1000),
                   s.drop_off_minute_ratio, (w.dwell, w.chat, w.question, w.poll, w.cta),
                   (s.grade.a, s.grade.b, s.grade.c), s.max_channels_per_event)


@dataclass
class EventResult:
    summary: dict
    minutes: list[dict]
    leads: list[dict]
    sessions: list[tuple]  # (attendee, start, dwell_end, depart, kind) of every attendee, all closed
    metrics: dict = field(default_factory=dict)  # (sample name, ((label, value), ...) sorted) -> value
    late: int = 0
    duplicates: int = 0
    roi: dict = field(default_factory=dict)  # what the ROI reference needs: start, key accounts, windows, accounts


@dataclass
class _Event:
    clock: int | None = None  # max ts of the non-duplicate interactions so far
    started: int | None = None
    ended: int | None = None
    title: str | None = None
    scheduled: dict = field(default_factory=dict)  # scheduled_start / scheduled_end, epoch ms (last given)
    key_accounts: set = field(default_factory=set)
    meta: dict = field(default_factory=dict)  # cost, currency, organizer_id (last given)
    seen: dict = field(default_factory=dict)  # id -> ts it was first seen at
    kept: list = field(default_factory=list)  # non-duplicate interactions, arrival order: (record, late)
    duplicates: int = 0


def classify(arrivals: list[tuple[str, dict]], p: Params) -> dict[str, _Event]:
    """Walk the arrivals once: lifecycle, duplicates, lateness and the clock, per event."""
    events: dict[str, _Event] = defaultdict(_Event)
    for kind, rec in arrivals:
        ev = events[rec["event_id"]]
        w = None if ev.clock is None else ev.clock - p.lateness_ms  # just BEFORE this record
        if kind == "event":
            if "title" in rec:
                ev.title = rec["title"]
            ev.scheduled.update({k: rec[k] for k in ("scheduled_start", "scheduled_end") if k in rec})
            ev.key_accounts |= set(rec.get("key_accounts") or ())
            ev.meta.update({k: rec[k] for k in ("cost", "currency", "organizer_id", "attribution_days",
                                                 "attribution_days_key_accounts", "presence", "channel_costs")
                            if k in rec})
            if rec["type"] == "started":
                ev.started = rec["ts"] if ev.started is None else min(ev.started, rec["ts"])
            elif rec["type"] == "ended" and ev.ended is None:
                ev.ended = rec["ts"] if w is None else max(rec["ts"], w)
            continue
        rid = rec["id"]
        if rid in ev.seen and not ev.clock - ev.seen[rid] > p.horizon_ms:
            ev.duplicates += 1
            continue
        ev.seen[rid] = rec["ts"]
        ev.kept.append((rec, w is not None and rec["ts"] < w))
        ev.clock = rec["ts"] if ev.clock is None else max(ev.clock, rec["ts"])
    return events


def reference(arrivals: list[tuple[str, dict]], p: Params | None = None) -> dict[str, EventResult]:
    """Every ended event's outputs (see the module docstring)."""
    p = p or Params()
    events = classify(arrivals, p)
    return {event_id: _result(event_id, ev, p) for event_id, ev in events.items() if ev.ended is not None}


def fold(records: list[dict], end: int, idle: int | None) -> list[tuple]:
    """One attendee's non-late presence records -> sessions (start, dwell_end, depart, kind); rule verbatim.
    idle None: join_leave presence (no idle timeout; only joins and leaves count)."""
    if idle is None:
        records = [r for r in records if r["type"] in ("join", "leave")]
        idle = float("inf")
    ordered = sorted(records, key=lambda r: (r["ts"], 0 if r["type"] == "leave" else 1, r["id"]))
    sessions, present, start, last = [], False, None, None
    for r in ordered:
        if r["ts"] > end:
            break
        if present and r["ts"] - last >= idle:
            sessions.append((start, last, last + idle, "timeout"))
            present = False
        if r["type"] == "leave":
            if present:
                sessions.append((start, r["ts"], r["ts"], "leave"))
                present = False
        else:
            if not present:
                present, start = True, r["ts"]
            last = r["ts"]
    if present:
        if end - last >= idle:
            sessions.append((start, last, last + idle, "timeout"))
        else:
            sessions.append((start, end, end, "ended"))
    return sessions


def _result(event_id: str, ev: _Event, p: Params) -> EventResult:
    end = ev.ended
    records: dict[str, list] = defaultdict(list)  # attendee -> non-duplicate records, arrival order
    presence: dict[str, list] = defaultdict(list)  # attendee -> non-late presence records
    for rec, late in ev.kept:
        records[rec["attendee_id"]].append(rec)
        if not late and rec["type"] != "registration":
            presence[rec["attendee_id"]].append(rec)
    idle = None if ev.meta.get("presence") == "join_leave" else p.idle_ms
    sessions = {aid: fold(recs, end, idle) for aid, recs in presence.items()}
    sessions = {aid: ss for aid, ss in sessions.items() if ss}
    flat = sorted((aid, *s) for aid, ss in sessions.items() for s in ss)

    def current(t: int) -> int:
        return sum(1 for _, start, _, depart, _ in flat if start <= t < depart)

    # ---- minute windows: contiguous from min(first session start, started) to the window of E
    minutes = []
    starts = [s[1] for s in flat] + ([ev.started] if ev.started is not None else [])
    if starts:
        counts = defaultdict(lambda: dict.fromkeys(WINDOW_COUNTS.values(), 0))
        for rec, late in ev.kept:
            if not late and rec["type"] in WINDOW_COUNTS:
                counts[rec["ts"] - rec["ts"] % MINUTE][WINDOW_COUNTS[rec["type"]]] += 1
        first = min(starts) - min(starts) % MINUTE
        for s in range(first, end - end % MINUTE + 1, MINUTE):
            e = s + MINUTE
            leaving = [x for x in flat if s <= x[3] < e and x[4] in ("leave", "timeout")]
            at_start = current(s)
            # attendees_current only rises at a session start: its max over [s, e) is at s or at such a start
            instants = [s] + [x[1] for x in flat if s <= x[1] < e]
            minutes.append({
                "event_id": event_id, "window_start": s, "window_end": e,
                "joins": sum(1 for x in flat if s <= x[1] < e),
                "leaves": len(leaving),
                "timeouts": sum(1 for x in leaving if x[4] == "timeout"),
                "active_attendees": len({x[0] for x in flat if x[1] < e and x[3] > s}),
                "attendees_start": at_start,
                "attendees_end": current(e),
                "peak_concurrent": max(current(t) for t in instants),
                "drop_off_ratio": len(leaving) / at_start if at_start else 0.0,
                **counts[s],
            })

    # ---- per attendee
    polls_seen = {r["poll_id"] for r, _ in ev.kept if r["type"] == "poll_vote"}
    joins = [r["ts"] for r, late in ev.kept if r["type"] == "join" and not late]
    start = ev.started if ev.started is not None else (min(joins) if joins else None)
    elapsed = max(0, end - start) if start is not None else None
    w_dwell, w_chat, w_question, w_poll, w_cta = p.weights
    leads = []
    for aid in sorted(records):
        recs = records[aid]
        n = {t: sum(1 for r in recs if r["type"] == t) for t in TYPES}
        attended = aid in sessions
        dwell = sum(dwell_end - s for s, dwell_end, _, _ in sessions.get(aid, ()))
        polls = {r["poll_id"] for r in recs if r["type"] == "poll_vote"}
        score = 0.0
        if attended:
            score = w_dwell * (min(1.0, dwell / elapsed) if elapsed else 0.0)
            score += w_chat * min(1.0, (n["chat"] + n["reaction"]) / 3)
            score += w_question * min(1.0, n["question"])
            score += w_poll * (len(polls) / len(polls_seen) if polls_seen else 0.0)
            score += w_cta * (1.0 if n["cta_click"] else 0.0)
        accounts = [r["account_id"] for r in recs if r.get("account_id") is not None]
        channels = [r["channel"] for r in recs if r["type"] == "registration" and r.get("channel") is not None]
        leads.append({
            "event_id": event_id, "attendee_id": aid, "attended": attended, "registered": n["registration"] > 0,
            "dwell_seconds": dwell / 1000, "interactions": {t: n[t] for t in LEAD_TYPES},
            "polls_voted": len(polls), "cta_clicked": n["cta_click"] > 0, "engagement_score": score,
            "grade": next((g for g, low in zip("ABC", p.grades) if score >= low), "D"),
            "organizer_id": ev.meta.get("organizer_id"),
            "key_account": any(r.get("key_account") is True for r in recs)
                           or any(a in ev.key_accounts for a in accounts),
            "account_id": accounts[0] if accounts else None, "channel": channels[0] if channels else None,
            "_dwell_ms": dwell, "_accounts": set(accounts),
        })
    # a lead per attendee with any non-registration record, and per registrant (no-shows included)
    leads = [x for x in leads if x["registered"] or any(x["interactions"].values())]

    # ---- per event
    present = [x for x in leads if x["attended"]]
    registered = [x for x in leads if x["registered"]]
    dwell_ms = sum(x["_dwell_ms"] for x in present)
    total_dwell = dwell_ms / 1000
    unique = len(present)
    totals = {t: sum(1 for r, _ in ev.kept if r["type"] == t) for t in TYPES}
    peak = max([current(x[1]) for x in flat] + [0])
    cost = ev.meta.get("cost")
    key_present = [x for x in present if x["key_account"]]
    covered = {a for x in key_present for a in x["_accounts"] if a in ev.key_accounts}
    grades = {g: sum(1 for x in leads if x["grade"] == g) for g in "ABCD"}
    summary = {
        "event_id": event_id, "as_of": end, "status": "ended", "title": ev.title,
        "started_at": ev.started, "ended_at": end, "attendees_current": current(end),
        "attendees_peak": peak,
        "unique_attendees": unique, "registrations": len(registered),
        "attendance_rate": sum(1 for x in registered if x["attended"]) / len(registered) if registered else None,
        "walk_ins": sum(1 for x in present if not x["registered"]),
        "total_dwell_seconds": total_dwell,
        "avg_dwell_seconds": total_dwell / unique if unique else 0.0,
        "interactions": totals,
        "poll_voters": len({r["attendee_id"] for r, _ in ev.kept if r["type"] == "poll_vote"}),
        "cta_clickers": len({r["attendee_id"] for r, _ in ev.kept if r["type"] == "cta_click"}),
        "engagement_score": sum(x["engagement_score"] for x in present) / unique if unique else 0.0,
        "key_account_attendees": len(key_present),
        "organizer_id": ev.meta.get("organizer_id"),
        "cost": cost,
        "currency": ev.meta.get("currency"),
        "cost_per_registration": cost / len(registered) if cost is not None and registered else None,
        "cost_per_attendee": cost / unique if cost is not None and unique else None,
        "key_account_share": len(key_present) / unique if unique else None,
        "key_accounts_targeted": len(ev.key_accounts),
        "key_accounts_covered": len(covered),
        "key_account_coverage": len(covered) / len(ev.key_accounts) if ev.key_accounts else None,
        "leads_by_grade": grades,
        "mqls": grades["A"] + grades["B"],
        "attendance_curve": [
            {"minute": m["window_start"], "attendees_start": m["attendees_start"], "attendees_end": m["attendees_end"],
             "peak_concurrent": m["peak_concurrent"], "joins": m["joins"], "leaves": m["leaves"]}
            for m in minutes
        ],
        "drop_off_minutes": [
            {"minute": m["window_start"], "leaves": m["leaves"], "attendees_start": m["attendees_start"],
             "drop_off_ratio": m["drop_off_ratio"]}
            for m in minutes if m["attendees_start"] > 0 and m["drop_off_ratio"] >= p.drop_ratio
        ],
        "channels": _channels(leads, ev.meta.get("channel_costs") or {}, p),
    }
    roi = {"start": start if start is not None else end, "key_accounts": set(ev.key_accounts),
           "accounts": {x["attendee_id"]: x["_accounts"] for x in leads}, **ev.meta}
    for x in leads:
        del x["_dwell_ms"], x["_accounts"]
    result = EventResult(summary, minutes, leads, flat, late=sum(1 for _, late in ev.kept if late),
                         duplicates=ev.duplicates, roi=roi)
    result.metrics = _metrics(event_id, ev, summary, flat)
    return result


def _channels(leads: list[dict], costs: dict, p: Params) -> list[dict]:
    """Figures per registration channel, straight from the leads (every attendee who registered or did anything);
    every channel with a cost has a row."""
    def row_of(x: dict) -> str:
        return "walk_in" if not x["registered"] else x["channel"] if x["channel"] else "unknown"

    named = ({row_of(x) for x in leads} | set(costs)) - {"walk_in", "unknown", "other"}
    registrations = {c: sum(1 for x in leads if x["registered"] and row_of(x) == c) for c in named}
    kept = sorted(named, key=lambda c: (c not in costs, -registrations[c], c))[:p.max_channels]
    groups: dict[str, list] = {c: [] for c in set(costs) if c in kept or c in ("walk_in", "unknown", "other")}
    groups = defaultdict(list, groups)
    if len(named) > len(kept):
        groups.setdefault("other", [])  # folding makes the row, even when no lead came through those channels
    for x in leads:
        c = row_of(x)
        groups[c if c in kept or c in ("walk_in", "unknown", "other") else "other"].append(x)
    out = []
    for c in sorted(groups):
        members = groups[c]
        registered = [x for x in members if x["registered"]]
        present = [x for x in members if x["attended"]]
        grades = {g: sum(1 for x in members if x["grade"] == g) for g in "ABCD"}
        out.append({
            "channel": c,
            "registrations": len(registered),
            "attendees": len(present),
            "attendance_rate": sum(x["attended"] for x in registered) / len(registered) if registered else None,
            "avg_dwell_seconds": sum(x["_dwell_ms"] for x in present) / 1000 / len(present) if present else 0.0,
            "engagement_score": sum(x["engagement_score"] for x in present) / len(present) if present else 0.0,
            "leads_by_grade": grades,
            "mqls": grades["A"] + grades["B"],
        })
        cost = costs.get(c)
        mqls = grades["A"] + grades["B"]
        out[-1].update({
            "cost": cost,
            "cost_per_registration": cost / len(registered) if cost is not None and registered else None,
            "cost_per_attendee": cost / len(present) if cost is not None and present else None,
            "cost_per_mql": cost / mqls if cost is not None and mqls else None,
        })
    return out


def _metrics(event_id: str, ev: _Event, summary: dict, flat: list[tuple]) -> dict:
    """The event series /metrics shows once the summary is out (sample name, sorted labels) -> value."""
    out: dict = {}

    def put(name: str, value, **labels) -> None:
        out[(name, tuple(sorted({"event_id": event_id, **labels}.items())))] = float(value)

    for name in ("attendees_current", "attendees_peak", "unique_attendees", "registrations", "walk_ins",
                 "engagement_score", "key_account_attendees", "poll_voters", "cta_clickers"):
        put(f"livepulse_{name}", summary[name])
    if summary["attendance_rate"] is not None:
        put("livepulse_attendance_ratio", summary["attendance_rate"])
    put("livepulse_mqls", summary["mqls"])
    for name in ("key_account_share", "key_account_coverage"):
        if summary[name] is not None:
            put(f"livepulse_{name}", summary[name])
    for name in ("cost_per_registration", "cost_per_attendee"):
        if summary[name] is not None:
            put(f"livepulse_{name}", summary[name], currency=summary["currency"] or "XXX")
    for grade, n in summary["leads_by_grade"].items():
        put("livepulse_leads", n, grade=grade)
    for row in summary["channels"]:
        channel = row["channel"]
        for name in ("registrations", "attendees", "avg_dwell_seconds", "engagement_score", "mqls"):
            put(f"livepulse_channel_{name}", row[name], channel=channel)
        if row["attendance_rate"] is not None:
            put("livepulse_channel_attendance_ratio", row["attendance_rate"], channel=channel)
        for grade, n in row["leads_by_grade"].items():
            put("livepulse_channel_leads", n, channel=channel, grade=grade)
        for name in ("cost_per_registration", "cost_per_attendee", "cost_per_mql"):
            if row[name] is not None:
                put(f"livepulse_channel_{name}", row[name], channel=channel, currency=summary["currency"] or "XXX")
    for t in TYPES:
        put("livepulse_interactions_total", summary["interactions"][t], type=t)
    put("livepulse_dwell_seconds_total", summary["total_dwell_seconds"])
    put("livepulse_dwell_including_open_seconds", summary["total_dwell_seconds"])  # (every session is complete)
    put("livepulse_event_info", 1, organizer_id=summary["organizer_id"] or "default")
    put("livepulse_event_data_delay_seconds", 0)  # the final figures are out: nothing is late
    durations = [(dwell_end - start) / 1000 for _, start, dwell_end, _, _ in flat]  # every session is complete
    for bound in SESSION_BUCKETS:
        put("livepulse_session_duration_seconds_bucket", sum(d <= bound for d in durations), le=str(float(bound)))
    put("livepulse_session_duration_seconds_bucket", len(durations), le="+Inf")
    put("livepulse_session_duration_seconds_count", len(durations))
    put("livepulse_session_duration_seconds_sum", sum(durations))
    if ev.started is not None:
        put("livepulse_event_start_timestamp_seconds", ev.started / 1000)
    put("livepulse_event_end_timestamp_seconds", ev.ended / 1000)
    if ev.clock is not None:
        put("livepulse_event_clock_timestamp_seconds", ev.clock / 1000)
    for name, ms in ev.scheduled.items():
        put(f"livepulse_event_{name}_timestamp_seconds", ms / 1000)
    return out


def assert_same(actual, expected, path: str = "$", tol: float = 1e-9) -> None:
    """Deep equality; floats may differ by `tol` relative (sums taken in another order), ints must be equal."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), \
            f"{path}: keys {sorted(actual) if isinstance(actual, dict) else actual} != {sorted(expected)}"
        for k in expected:
            assert_same(actual[k], expected[k], f"{path}.{k}", tol)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), \
            f"{path}: length {len(actual) if isinstance(actual, list) else actual} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{path}[{i}]", tol)
    elif isinstance(expected, float) or isinstance(actual, float):
        assert isinstance(actual, (int, float)) and abs(actual - expected) <= tol * max(1.0, abs(expected)), \
            f"{path}: {actual!r} != {expected!r}"
    else:
        assert actual == expected and type(actual) is type(expected), f"{path}: {actual!r} != {expected!r}"
