"""The batch reference: every output of LivePulse computed the obvious way from the complete list of records.

Slow on purpose and independent of `streams.domain`: each rule of the README's "Semantics" section is written
out directly (fold the presence records, evaluate the audience step function at every instant that matters,
count). The streaming worker must agree with it exactly; tests/test_reference_equality.py and the integration
tests compare the two.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

MINUTE = 60_000
TYPES = ("registration", "join", "leave", "heartbeat", "chat", "question", "poll_vote", "reaction", "cta_click")
LEAD_TYPES = TYPES[1:]
WINDOW_COUNTS = {"heartbeat": "heartbeats", "chat": "chats", "question": "questions", "poll_vote": "poll_votes",
                 "reaction": "reactions", "cta_click": "cta_clicks"}


@dataclass
class Params:
    idle_ms: int = 120_000
    lateness_ms: int = 30_000
    horizon_ms: int = 600_000
    drop_ratio: float = 0.1
    weights: tuple = (40.0, 15.0, 15.0, 15.0, 15.0)  # dwell, chat, question, poll, cta


@dataclass
class EventResult:
    summary: dict
    minutes: list[dict]
    leads: list[dict]
    sessions: list[tuple]  # (attendee, start, dwell_end, depart, kind) of every attendee, all closed


@dataclass
class _Event:
    clock: int | None = None
    started: int | None = None
    ended: int | None = None
    meta: dict = field(default_factory=dict)
    key_accounts: set = field(default_factory=set)
    seen_ids: dict = field(default_factory=dict)  # (attendee, id) -> ts first seen
    kept: list = field(default_factory=list)  # non-duplicate interactions: (record, late)


def reference(arrivals: list[tuple[str, dict]], p: Params | None = None) -> dict[str, EventResult]:
    """`arrivals`: ("interaction" | "event", decoded record) in arrival order, for any number of events."""
    p = p or Params()
    events: dict[str, _Event] = defaultdict(_Event)
    for kind, rec in arrivals:
        ev = events[rec["event_id"]]
        watermark = ev.clock - p.lateness_ms if ev.clock is not None else None
        if kind == "event":
            for k in ("title",):
                if k in rec:
                    ev.meta[k] = rec[k]
            ev.key_accounts.update(rec.get("key_accounts", ()))
            if rec["type"] == "started":
                ev.started = rec["ts"] if ev.started is None else min(ev.started, rec["ts"])
            elif rec["type"] == "ended" and ev.ended is None:
                ev.ended = rec["ts"] if watermark is None else max(rec["ts"], watermark)
            continue
        key = (rec["attendee_id"], rec["id"])
        first = ev.seen_ids.get(key)
        if first is not None and not (ev.clock - first > p.horizon_ms):
            continue  # duplicate
        ev.seen_ids[key] = rec["ts"]
        late = watermark is not None and rec["ts"] < watermark
        ev.kept.append((rec, late))
        ev.clock = rec["ts"] if ev.clock is None else max(ev.clock, rec["ts"])
    return {event_id: _result(event_id, ev, p) for event_id, ev in events.items() if ev.ended is not None}


def _sessions(records: list[dict], end: int, idle: int) -> list[tuple]:
    """Fold one attendee's non-late presence records into closed sessions (start, dwell_end, depart, kind)."""
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
    by_attendee: dict[str, list] = defaultdict(list)  # all non-duplicate records
    presence: dict[str, list] = defaultdict(list)
    for rec, late in ev.kept:
        by_attendee[rec["attendee_id"]].append(rec)
        if not late and rec["type"] != "registration":
            presence[rec["attendee_id"]].append(rec)
    sessions = {aid: _sessions(recs, end, p.idle_ms) for aid, recs in presence.items()}
    sessions = {aid: s for aid, s in sessions.items() if s}
    flat = [(aid, *s) for aid, ss in sessions.items() for s in ss]

    def current(t: int) -> int:
        return sum(1 for _, start, _, depart, _ in flat if start <= t < depart)

    # --- minute windows
    firsts = [s[1] for s in flat] + ([ev.started] if ev.started is not None else [])
    minutes = []
    if firsts:
        first_w = min(firsts) // MINUTE * MINUTE
        counts = defaultdict(lambda: defaultdict(int))
        for rec, late in ev.kept:
            if not late and rec["type"] in WINDOW_COUNTS:
                counts[rec["ts"] // MINUTE * MINUTE][WINDOW_COUNTS[rec["type"]]] += 1
        for s in range(first_w, end // MINUTE * MINUTE + MINUTE, MINUTE):
            e = s + MINUTE
            instants = [s] + [x[1] for x in flat if s <= x[1] < e]
            leaves = [x for x in flat if s <= x[3] < e and x[4] in ("leave", "timeout")]
            at_start = current(s)
            window = {
                "event_id": event_id, "window_start": s, "window_end": e,
                "joins": sum(1 for x in flat if s <= x[1] < e),
                "leaves": len(leaves), "timeouts": sum(1 for x in leaves if x[4] == "timeout"),
                "active_attendees": len({x[0] for x in flat if x[1] < e and x[3] > s}),
                "attendees_start": at_start, "attendees_end": current(e),
                "peak_concurrent": max(current(t) for t in instants),
                "drop_off_ratio": len(leaves) / at_start if at_start else 0.0,
            }
            for name in WINDOW_COUNTS.values():
                window[name] = counts[s][name]
            minutes.append(window)

    # --- per attendee and per event
    polls_seen = {r["poll_id"] for r, _ in ev.kept if r["type"] == "poll_vote"}
    joins = [r["ts"] for r, late in ev.kept if r["type"] == "join" and not late]
    start = ev.started if ev.started is not None else (min(joins) if joins else None)
    elapsed = end - start if start is not None else None
    w_dwell, w_chat, w_question, w_poll, w_cta = p.weights
    leads, totals = [], dict.fromkeys(TYPES, 0)
    unique = registrations = attended_registrants = walk_ins = key_attendees = voters = clickers = 0
    dwell_total_ms, score_sum = 0, 0.0
    for aid in sorted(by_attendee):
        recs = by_attendee[aid]
        n = {t: sum(1 for r in recs if r["type"] == t) for t in TYPES}
        for t in TYPES:
            totals[t] += n[t]
        registered = n["registration"] > 0
        attended = aid in sessions
        account = next((r["account_id"] for r in recs if r.get("account_id") is not None), None)
        channel = next((r.get("channel") for r in recs if r["type"] == "registration"), None)
        key = any(r.get("key_account") is True for r in recs) or account in ev.key_accounts
        polls = {r["poll_id"] for r in recs if r["type"] == "poll_vote"}
        dwell = sum(dwell_end - s for s, dwell_end, _, _ in sessions.get(aid, ()))
        score = 0.0
        if attended:
            score = w_dwell * (min(1.0, dwell / elapsed) if elapsed and elapsed > 0 else 0.0)
            score += w_chat * min(1.0, (n["chat"] + n["reaction"]) / 3)
            score += w_question * min(1.0, n["question"])
            score += w_poll * (len(polls) / len(polls_seen) if polls_seen else 0.0)
            score += w_cta * (1.0 if n["cta_click"] else 0.0)
        registrations += registered
        voters += n["poll_vote"] > 0
        clickers += n["cta_click"] > 0
        if attended:
            unique += 1
            attended_registrants += registered
            walk_ins += not registered
            key_attendees += key
            dwell_total_ms += dwell
            score_sum += score
        if registered or any(r["type"] != "registration" for r in recs):
            leads.append({
                "event_id": event_id, "attendee_id": aid, "attended": attended, "registered": registered,
                "dwell_seconds": dwell / 1000, "interactions": {t: n[t] for t in LEAD_TYPES},
                "polls_voted": len(polls), "cta_clicked": n["cta_click"] > 0, "engagement_score": score,
                "key_account": key, "account_id": account, "channel": channel,
            })
    total_dwell = dwell_total_ms / 1000
    summary = {
        "event_id": event_id, "as_of": end, "status": "ended", "title": ev.meta.get("title"),
        "started_at": ev.started, "ended_at": end, "attendees_current": 0,
        "attendees_peak": max((m["peak_concurrent"] for m in minutes), default=0),
        "unique_attendees": unique, "registrations": registrations,
        "attendance_rate": attended_registrants / registrations if registrations else None,
        "walk_ins": walk_ins, "total_dwell_seconds": total_dwell,
        "avg_dwell_seconds": total_dwell / unique if unique else 0.0,
        "interactions": totals, "poll_voters": voters, "cta_clickers": clickers,
        "engagement_score": score_sum / unique if unique else 0.0, "key_account_attendees": key_attendees,
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
    }
    return EventResult(summary, minutes, leads, flat)


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
