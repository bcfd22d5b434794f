"""Each rule of docs/semantics.md on the framework-free EventState, with numbers worked out by hand."""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.event import DUPLICATE, EVENT, LATE, REDELIVERED, EventState, Params

M = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, minute aligned
S = 1000


class Feed:
    def __init__(self, params: Params | None = None) -> None:
        self.ev = EventState("ev", params or Params())
        self.n = 0

    def i(self, aid: str, typ: str, at_s: float, **extra) -> int:
        self.n += 1
        rec = {"id": f"i{self.n}", "event_id": "ev", "attendee_id": aid, "type": typ, "ts": T0 + int(at_s * S)}
        rec.update(extra)
        result = self.ev.apply_interaction(rec)
        self.ev.advance()
        return result

    def life(self, typ: str, at_s: float, **extra) -> None:
        self.ev.apply_lifecycle({"event_id": "ev", "type": typ, "ts": T0 + int(at_s * S), **extra})
        self.ev.advance()

    def summary(self):
        return self.ev.finish(0.0)


def test_join_leave_dwell_and_rejoin_same_ms_stays_present():
    f = Feed()
    f.i("a", "join", 0)
    f.i("a", "leave", 50)
    f.i("a", "join", 50)  # reconnect at the same ms: leave sorts first, one continuous presence
    f.i("a", "leave", 80)
    f.life("ended", 100)
    summary, leads = f.summary()
    assert leads[0]["dwell_seconds"] == 80.0
    first = summary["attendance_curve"][0]
    # Still a leave and a join, but the audience never dips: the peak stays 1 and the minute ends with 1.
    assert (first["joins"], first["leaves"], first["peak_concurrent"], first["attendees_end"]) == (2, 1, 1, 1)
    assert summary["attendance_curve"][1]["leaves"] == 1


def test_two_devices_one_attendee_and_leave_without_join():
    f = Feed()
    f.i("a", "join", 0, client="web")
    f.i("a", "join", 5, client="mobile")
    f.i("b", "leave", 10)
    snap = f.ev.snapshot(f.ev.clock)
    assert snap["attendees_current"] == 1
    assert snap["unique_attendees"] == 1


def test_idle_timeout_ends_dwell_at_last_seen_and_departs_after_timeout():
    f = Feed()
    f.i("a", "join", 0)
    f.i("a", "heartbeat", 30)
    f.i("b", "join", 1)
    for t in range(31, 400, 30):
        f.i("b", "heartbeat", t)
    f.life("ended", 400)
    summary, leads = f.summary()
    a = next(l for l in leads if l["attendee_id"] == "a")
    assert a["dwell_seconds"] == 30.0
    curve = {(c["minute"] - T0) // M: c for c in summary["attendance_curve"]}
    # a's last sign of life at 30 s; the timeout (120 s) takes effect at 150 s: minute 2.
    assert curve[2]["leaves"] == 1 and curve[2]["attendees_start"] == 2 and curve[2]["attendees_end"] == 1


def test_timeout_after_many_signs_of_life_one_pending_timer_each():
    """Idle timers are lazy: each present attendee has one pending timer, which re-arms itself when it fires
    before the deadline that later signs of life moved; the timeout still lands exactly at the last one + 120 s."""
    f = Feed()
    f.i("a", "join", 0)
    f.i("b", "join", 0)
    for t in range(30, 330, 30):
        f.i("a", "heartbeat", t)  # a's last sign of life at 300 s: timed out at 420 s
        f.i("b", "heartbeat", t)
        pending = [aid for due in f.ev._timers.values() for aid in ((due,) if isinstance(due, str) else due)]
        assert sorted(pending) == ["a", "b"]  # one timer per present attendee, not one per heartbeat
    for t in range(330, 600, 30):
        f.i("b", "heartbeat", t)  # the clock goes on: a's timer fires at 120, 240, 360 s (re-armed), then 420 s
        assert (f.ev.attendees["a"].open_start is None) == (t >= 420)
    f.life("ended", 600)
    summary, leads = f.summary()
    assert next(l for l in leads if l["attendee_id"] == "a")["dwell_seconds"] == 300.0
    curve = {(c["minute"] - T0) // M: c for c in summary["attendance_curve"]}
    # departed at 420 s, the first instant of minute 7: present through minute 6, a leave in minute 7
    assert [curve[m]["leaves"] for m in (5, 6, 7, 8)] == [0, 0, 1, 0]
    assert (curve[6]["attendees_start"], curve[6]["attendees_end"], curve[7]["attendees_start"]) == (2, 1, 1)


def test_activity_after_timeout_starts_a_new_session():
    f = Feed()
    f.i("a", "join", 0)
    f.i("x", "join", 0)
    for t in range(30, 600, 30):
        f.i("x", "heartbeat", t)  # keeps the event clock moving
        if t == 300:
            f.i("a", "chat", 300)  # 300 s of silence > 120 s: a timed out at 0 s, back at 300 s
        elif t > 300:
            f.i("a", "heartbeat", t)
    f.life("ended", 600)
    _, leads = f.summary()
    a = next(l for l in leads if l["attendee_id"] == "a")
    assert a["dwell_seconds"] == 300.0  # [0,0] + [300, 600]


def test_registration_never_makes_present_and_attendance_rate():
    f = Feed()
    f.i("r1", "registration", -86400)
    f.i("r2", "registration", -3600)
    f.i("r1", "join", 0)
    f.i("w", "join", 1)  # walk-in
    snap = f.ev.snapshot(f.ev.clock)
    assert snap["registrations"] == 2
    assert snap["unique_attendees"] == 2
    assert snap["walk_ins"] == 1
    assert snap["attendance_rate"] == 0.5


def test_nothing_counts_after_ended_and_lobby_counts():
    f = Feed()
    f.i("a", "join", -120)  # lobby, before started
    f.i("a", "heartbeat", -60)
    f.life("started", 0)
    f.i("a", "heartbeat", 0)
    f.i("a", "heartbeat", 60)
    f.life("ended", 100)
    f.i("a", "heartbeat", 110)
    f.i("b", "join", 105)  # after the end: never present
    summary, leads = f.summary()
    assert {l["attendee_id"]: l["dwell_seconds"] for l in leads} == {"a": 220.0, "b": 0.0}
    assert summary["unique_attendees"] == 1
    assert summary["interactions"]["heartbeat"] == 4  # the one after the end counts, but changes no presence


def test_duplicates_dropped_and_redelivery_is_idempotent():
    ev = EventState("ev", Params())
    rec = {"id": "x1", "event_id": "ev", "attendee_id": "a", "type": "chat", "ts": T0}
    assert ev.apply_interaction(dict(rec), 0, 10) != DUPLICATE
    assert ev.apply_interaction(dict(rec), 0, 11) == DUPLICATE  # same id, another offset: a real duplicate
    ev.apply_interaction(dict(rec), 0, 10)  # same offset: redelivery after a restart
    ev.advance()
    assert ev.attendees["a"].counts[4] == 1
    assert ev.duplicates == 1
    assert sum(ev.window_counts[T0]) == 1


def test_attendee_record_newer_than_the_event_record_is_replayed_exactly():
    """A crash left the last batch's ids and attendee records persisted and its event record not. The batch held a
    registration older than the de-duplication horizon, whose id counts as forgotten at once: the attendee's own
    offset must still make its replay a redelivery (counted once, not twice)."""
    p = Params(horizon_ms=60 * S)
    ev = EventState("ev", p)
    ev.apply_interaction({"id": "j", "event_id": "ev", "attendee_id": "a", "type": "join", "ts": T0 + 600 * S}, 0, 1)
    ev.advance()
    stored = {(kind, name): orjson.dumps(r) for kind, name, r in ev.take_writes()}
    old = {"id": "r", "event_id": "ev", "attendee_id": "b", "type": "registration", "ts": T0}
    ev.apply_interaction(dict(old), 0, 2)
    ev.advance()
    writes = ev.take_writes()
    assert ev.attendees["b"].ids == []  # the old id leaves b's memory in the same batch (10 min behind the clock)
    for kind, name, r in writes[:-1]:  # all but the event record got out
        assert kind != EVENT
        if r is None:
            stored.pop((kind, name), None)
        else:
            stored[kind, name] = orjson.dumps(r)
    restored = EventState.load("ev", p, {name: orjson.loads(r) for name, r in stored.items()})
    assert restored.apply_interaction(dict(old), 0, 2) == REDELIVERED
    assert restored.attendees["b"].counts[0] == 1


def test_late_record_counts_in_totals_not_presence():
    f = Feed()
    f.i("a", "join", 0)
    f.i("a", "heartbeat", 100)
    assert f.i("b", "join", 60) == LATE  # 40 s behind a clock at 100 s
    f.i("b", "chat", 60)
    f.life("ended", 110)
    summary, _ = f.summary()
    assert summary["unique_attendees"] == 1
    assert summary["interactions"]["join"] == 2
    assert summary["interactions"]["chat"] == 1
    assert f.ev.late == 2


def test_key_account_via_event_list_arriving_later():
    f = Feed()
    f.i("a", "join", 0, account_id="acme")
    f.i("b", "join", 0, key_account=True)
    f.i("c", "join", 0, account_id="other")
    f.life("scheduled", -1000, key_accounts=["acme"])
    assert f.ev.snapshot(f.ev.clock)["key_account_attendees"] == 2


def test_engagement_score_formula():
    f = Feed()
    f.life("started", 0)
    f.i("a", "join", 0)
    f.i("a", "chat", 10)
    f.i("a", "question", 20)
    f.i("a", "poll_vote", 30, poll_id="p1")
    f.i("b", "join", 0)
    f.i("b", "poll_vote", 30, poll_id="p2")
    f.i("a", "cta_click", 40, cta_id="c")
    f.i("a", "leave", 50)
    f.i("b", "leave", 100)
    f.life("ended", 100)
    summary, leads = f.summary()
    score = {l["attendee_id"]: l["engagement_score"] for l in leads}
    assert abs(score["a"] - (40 * 0.5 + 15 / 3 + 15 + 15 * 0.5 + 15)) < 1e-9
    assert abs(score["b"] - (40 * 1.0 + 0 + 0 + 15 * 0.5 + 0)) < 1e-9
    assert abs(summary["engagement_score"] - (score["a"] + score["b"]) / 2) < 1e-9


def _scenario(seed: int) -> list[dict]:
    rng = random.Random(seed)
    recs = []
    n = 0
    for a in range(8):
        t = rng.randint(0, 60) * S
        kinds = ["join"] + [rng.choice(["heartbeat", "chat", "leave", "join", "reaction"]) for _ in range(12)]
        for k in kinds:
            n += 1
            recs.append({"id": f"r{n}", "event_id": "ev", "attendee_id": f"a{a}", "type": k, "ts": T0 + t})
            t += rng.choice([1, 10, 30, 130]) * S
    recs.sort(key=lambda r: r["ts"])
    return recs


def _run(recs: list[dict], end: int, batch: int) -> tuple:
    ev = EventState("ev", Params())
    for i, r in enumerate(recs):
        ev.apply_interaction(dict(r))
        if i % batch == 0:
            ev.advance()
    ev.apply_lifecycle({"event_id": "ev", "type": "ended", "ts": end})
    summary, leads = ev.finish(0.0)
    return summary, leads, ev.curve


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), shuffle_seed=st.integers(0, 10_000), batch=st.integers(1, 7))
def test_reordering_within_lateness_changes_nothing(seed, shuffle_seed, batch):
    recs = _scenario(seed)
    end = max(r["ts"] for r in recs) + 1000
    rng = random.Random(shuffle_seed)
    # Delay each record by up to 20 s of arrival position (< 30 s lateness): sort by a jittered key.
    jittered = sorted(recs, key=lambda r: r["ts"] + rng.randint(0, 20_000))
    in_order = _run(recs, end, 1)
    shuffled = _run(jittered, end, batch)
    assert shuffled[0] == in_order[0]
    assert shuffled[1] == in_order[1]
    assert shuffled[2] == in_order[2]


def test_a_restored_id_memory_holds_the_latest_sighting_of_an_id():
    """An id seen again after the horizon is new again, remembered anew in a later ids record while the earlier
    record still holds the old sighting: restored, the id memory must hold the later one, so a re-send of it within
    the horizon stays a duplicate."""
    p = Params(horizon_ms=60 * S)
    ev = EventState("ev", p)
    stored: dict = {}

    def batch(*records):
        for offset, rid, ts in records:
            ev.apply_interaction({"id": rid, "event_id": "ev", "attendee_id": "a", "type": "chat", "ts": ts}, 0,
                                 offset)
        ev.advance()
        for kind, name, r in ev.take_writes():
            if r is None:
                stored.pop((kind, name), None)
            else:
                stored[kind, name] = orjson.dumps(r)

    batch((1, "x", T0), (2, "y", T0 + 600 * S))  # (y keeps this ids record alive)
    batch((3, "x", T0 + 601 * S))  # 10 min after its first sighting: new again
    restored = EventState.load("ev", p, {name: orjson.loads(r) for name, r in stored.items()})
    chat = {"id": "x", "event_id": "ev", "attendee_id": "a", "type": "chat", "ts": T0 + 602 * S}
    assert restored.apply_interaction(dict(chat), 0, 4) == DUPLICATE
    assert restored.attendees["a"].counts[4] == 3
