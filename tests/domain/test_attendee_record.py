"""Attendee records: the current (flat) layout round-trips, and records of the older layouts still load, as a rolling
upgrade restores state written by the previous version."""

from __future__ import annotations

import random

import orjson

from streams.domain.event import Attendee, EventState, Params

M = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, minute aligned
S = 1000


def nested(record: list) -> list:
    """A current attendee record in the layout written before the flat one (Attendee.dump() until then):
    [[ck_present, ck_start, ck_last, ck_ever, final_sessions, final_dwell, [[ts, rank], ...]], registered, key_flag,
    accounts, channel, counts, polls, [[id, topic, offset, ts], ...], upto, upto_rekeyed]."""
    (_, ck_present, ck_start, ck_last, ck_ever, sessions, final_dwell, tail, registered, key_flag, accounts, channel,
     counts, polls, ids, upto, upto_rekeyed) = record
    presence = [ck_present, ck_start, ck_last, ck_ever, sessions, final_dwell,
                [tail[i:i + 2] for i in range(0, len(tail), 2)]]
    return [presence, registered, key_flag, accounts, channel, counts, polls,
            [ids[i:i + 4] for i in range(0, len(ids), 4)], upto, upto_rekeyed]


def test_a_record_of_the_previous_layout_loads():
    old = [[True, T0 + 5 * S, T0 + 90 * S, True, [[T0, T0 + 2 * S, T0 + 2 * S, 0]], 2 * S,
            [[T0 + 95 * S, 0], [T0 + 95 * S, 1]]],
           True, False, ["acme", "globex"], "email", [1, 2, 1, 3, 1, 0, 1, 0, 0], ["p1"],
           [["r1", 0, 7, T0 - 3_600 * S], ["h9", 1, 3, T0 + 95 * S]], 11, 3]
    a = Attendee.load(orjson.loads(orjson.dumps(old)))
    assert (a.ck_present, a.ck_start, a.ck_last, a.ck_ever) == (True, T0 + 5 * S, T0 + 90 * S, True)
    assert a.final_sessions == [(T0, T0 + 2 * S, T0 + 2 * S, 0)] and a.final_dwell == 2 * S
    assert a.tail == (T0 + 95 * S, 0, T0 + 95 * S, 1)
    assert (a.registered, a.key_flag, a.accounts, a.channel, a.polls) == (True, False, ("acme", "globex"), "email",
                                                                          ("p1",))
    assert a.counts == (1, 2, 1, 3, 1, 0, 1, 0, 0)
    assert a.find_id("r1") == (0, 7, T0 - 3_600 * S) and a.find_id("h9") == (1, 3, T0 + 95 * S)
    assert a.id_count() == 2 and (a.upto, a.upto_rekeyed) == (11, 3)
    # Written again in the current layout, it loads to the same state.
    b = Attendee.load(orjson.loads(orjson.dumps(a.dump())))
    assert b.dump() == a.dump() and orjson.loads(orjson.dumps(nested(a.dump()))) == old


def test_records_older_still_load():
    """Before account lists (a single account id or null) and before per-attendee offsets (8 items: the offsets
    are those of the ids remembered)."""
    presence = [False, 0, 0, False, [], 0, [[T0, 1]]]
    ids = [["j1", 0, 40, T0], ["j0", 0, 12, T0 - S], ["x", 1, 5, T0]]
    a = Attendee.load([presence, False, True, "acme", None, [0, 1, 0, 0, 0, 0, 0, 0, 0], [], ids])
    assert (a.accounts, a.key_flag, a.polls, a.upto, a.upto_rekeyed) == (("acme",), True, (), 40, 5)
    a = Attendee.load([presence, False, False, None, None, [0, 1, 0, 0, 0, 0, 0, 0, 0], [], []])
    assert (a.accounts, a.upto, a.upto_rekeyed, a.id_count()) == ((), -1, -1, 0)


def _records(seed: int) -> list[dict]:
    rng = random.Random(seed)
    recs = []
    for a in range(12):
        t = rng.randint(0, 90) * S
        extra = {"account_id": f"acct{a % 3}"} if a % 2 else {}
        kinds = ["registration", "join"] + [rng.choice(["heartbeat", "chat", "leave", "join", "poll_vote"])
                                            for _ in range(14)]
        for k in kinds:
            rec = {"event_id": "ev", "attendee_id": f"a{a}", "type": k, "ts": T0 + t, **extra}
            if k == "poll_vote":
                rec["poll_id"] = f"p{rng.randint(1, 2)}"
            if k == "registration":
                rec["channel"] = "email"
            recs.append(rec)
            t += rng.choice([1, 10, 30, 130]) * S
    recs.sort(key=lambda r: r["ts"])
    for n, rec in enumerate(recs):
        rec["id"] = f"r{n}"
    for n in sorted(rng.sample(range(len(recs) - 3), 30), reverse=True):
        recs.insert(n + 3, dict(recs[n]))  # a duplicate soon after (a new offset, the same id)
    return recs


def _feed(ev: EventState, recs: list[tuple[int, dict]], batch: int = 7) -> None:
    for i in range(0, len(recs), batch):
        _batch(ev, recs[i:i + batch])


def _batch(ev: EventState, recs: list[tuple[int, dict]]) -> list[str]:
    for offset, rec in recs:
        ev.apply_interaction(dict(rec), 0, offset)
    ev.advance()
    return ev.take_dirty()[0]


def _finish(ev: EventState) -> tuple:
    ev.apply_lifecycle({"event_id": "ev", "type": "ended", "ts": max(r["ts"] for _, r in RECORDS) + 60 * S})
    summary, leads = ev.finish(0.0)
    return summary, leads, ev.curve


RECORDS = list(enumerate(_records(7)))


def test_an_event_restored_from_previous_layout_records_continues_exactly():
    """Including a crash while a batch's records were written: its attendee records reached the changelog and its
    event record did not, so the replay depends on the ids and offsets the attendee records hold."""
    p = Params(horizon_ms=120 * S)
    whole = EventState("ev", p)
    _feed(whole, RECORDS)
    expected = _finish(whole)
    for cut in range(21, len(RECORDS) - 7, 14):
        first = EventState("ev", p)
        _feed(first, RECORDS[:cut])
        event = orjson.dumps(first.dump_event())  # the last event record persisted
        current = {aid: orjson.loads(orjson.dumps(a.dump())) for aid, a in first.attendees.items()}
        for aid in _batch(first, RECORDS[cut:cut + 7]):  # its attendee records got out, the event record did not
            current[aid] = orjson.loads(orjson.dumps(first.attendees[aid].dump()))
        for records in (current, {aid: nested(r) for aid, r in current.items()}):
            restored = EventState.load("ev", p, orjson.loads(event), records)
            _feed(restored, RECORDS[cut:])
            assert _finish(restored) == expected
