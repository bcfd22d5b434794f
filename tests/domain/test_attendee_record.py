"""Attendee records: the current (flat) layout round-trips, and records of the older layouts still load, as a rolling
upgrade restores state written by the previous version."""

from __future__ import annotations

import random

import orjson

from streams.domain.event import (
    ATTENDEE,
    EVENT,
    IDS,
    WINDOW,
    Attendee,
    EventState,
    Params,
)

M = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, minute aligned
S = 1000


def flat(a: Attendee) -> list:
    """The attendee's record in layout 2 (flat, the ids inside: what Attendee.dump() wrote until ids records)."""
    record = a.dump()
    return [2, *record[1:14], list(a.ids), *record[14:]]


def nested(record: list) -> list:
    """A layout 2 record in the layout written before it (nested):
    [[ck_present, ck_start, ck_last, ck_ever, final_sessions, final_dwell, [[ts, rank], ...]], registered, key_flag,
    accounts, channel, counts, polls, [[id, topic, offset, ts], ...], upto, upto_rekeyed]."""
    (_, ck_present, ck_start, ck_last, ck_ever, sessions, final_dwell, tail, registered, key_flag, accounts, channel,
     counts, polls, ids, upto, upto_rekeyed) = record
    presence = [ck_present, ck_start, ck_last, ck_ever, sessions, final_dwell,
                [tail[i:i + 2] for i in range(0, len(tail), 2)]]
    return [presence, registered, key_flag, accounts, channel, counts, polls,
            [ids[i:i + 4] for i in range(0, len(ids), 4)], upto, upto_rekeyed]


def roundtrip(record):
    return orjson.loads(orjson.dumps(record))


def test_records_of_the_previous_layouts_load():
    old = [[True, T0 + 5 * S, T0 + 90 * S, True, [[T0, T0 + 2 * S, T0 + 2 * S, 0]], 2 * S,
            [[T0 + 95 * S, 0], [T0 + 95 * S, 1]]],
           True, False, ["acme", "globex"], "email", [1, 2, 1, 3, 1, 0, 1, 0, 0], ["p1"],
           [["r1", 0, 7, T0 - 3_600 * S], ["h9", 1, 3, T0 + 95 * S]], 11, 3]
    a = Attendee.load(roundtrip(old))
    assert (a.ck_present, a.ck_start, a.ck_last, a.ck_ever) == (True, T0 + 5 * S, T0 + 90 * S, True)
    assert a.final_sessions == [(T0, T0 + 2 * S, T0 + 2 * S, 0)] and a.final_dwell == 2 * S
    assert a.tail == (T0 + 95 * S, 0, T0 + 95 * S, 1)
    assert (a.registered, a.key_flag, a.accounts, a.channel, a.polls) == (True, False, ("acme", "globex"), "email",
                                                                          ("p1",))
    assert a.counts == (1, 2, 1, 3, 1, 0, 1, 0, 0)
    assert a.find_id("r1") == (0, 7, T0 - 3_600 * S) and a.find_id("h9") == (1, 3, T0 + 95 * S)
    assert a.id_count() == 2 and (a.upto, a.upto_rekeyed) == (11, 3)
    # The flat layout 2 holds the same, and converts back to the nested one.
    b = Attendee.load(roundtrip(flat(a)))
    assert flat(b) == flat(a) and roundtrip(nested(flat(a))) == old
    # The current layout leaves the ids out (they are in ids records), all else loads the same.
    c = Attendee.load(roundtrip(a.dump()))
    assert c.dump() == a.dump() and c.id_count() == 0 and roundtrip(a.dump())[0] == 3


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


def _batch(ev: EventState, recs: list[tuple[int, dict]]) -> list:
    for offset, rec in recs:
        ev.apply_interaction(dict(rec), 0, offset)
    ev.advance()
    return ev.take_writes()


def persist(store: dict, writes: list) -> dict:
    """Apply state writes to a store of encoded records, {(kind, name): bytes}."""
    for kind, name, record in writes:
        if record is None:
            store.pop((kind, name), None)
        else:
            store[kind, name] = orjson.dumps(record)
    return store


def restore(store: dict) -> EventState:
    return EventState.load("ev", P, {name: orjson.loads(record) for name, record in store.items()})


def _finish(ev: EventState) -> tuple:
    ev.apply_lifecycle({"event_id": "ev", "type": "ended", "ts": max(r["ts"] for _, r in RECORDS) + 60 * S})
    summary, leads = ev.finish(0.0)
    return summary, leads, ev.curve


RECORDS = list(enumerate(_records(7)))
P = Params(horizon_ms=120 * S)


def _expected() -> tuple:
    whole = EventState("ev", P)
    _feed(whole, RECORDS)
    return _finish(whole)


def test_a_crash_while_a_batch_is_persisted_replays_exactly():
    """Any prefix of a batch's state records reached the changelog, the rest did not: the event restored from them
    and fed the records again from the last persisted event record on ends exactly as if nothing happened."""
    expected = _expected()
    for cut in range(21, len(RECORDS) - 7, 14):
        first, store = EventState("ev", P), {}
        for i in range(0, cut, 7):
            persist(store, _batch(first, RECORDS[i:i + 7]))
        writes = _batch(first, RECORDS[cut:cut + 7])  # the batch being persisted when the worker dies
        # new ids, attendees, windows, ids tombstones, the event record
        phases = [3 if kind == IDS and record is None else (0, 1, 2, 4)[kind] for kind, _, record in writes]
        assert phases == sorted(phases) and phases[-1] == 4
        for n in range(len(writes)):
            restored = restore(persist(dict(store), writes[:n]))
            _feed(restored, RECORDS[cut:])
            assert _finish(restored) == expected, f"cut {cut}, {n} of {len(writes)} records persisted"


def test_an_event_restored_from_previous_layout_records_continues_exactly():
    """State written before ids and windows had records of their own: the attendees hold their ids (layout 2, or
    nested) and the event record the curve. A crash while a batch's records were written is included: its attendee
    records reached the changelog and its event record did not, so the replay depends on the ids and offsets the
    attendee records hold. The restored event writes the ids and the curve out with its next batch: a second
    restart from the new records only continues exactly too."""
    expected = _expected()
    for cut in range(21, len(RECORDS) - 7, 14):
        first = EventState("ev", P)
        _feed(first, RECORDS[:cut])
        event = orjson.dumps(first.dump_event() | {"curve": first.curve})  # the last event record persisted
        current = {aid: flat(a) for aid, a in first.attendees.items()}
        for kind, aid, _ in _batch(first, RECORDS[cut:cut + 7]):  # its attendee records got out, the event's did not
            if kind == ATTENDEE:
                current[aid] = flat(first.attendees[aid])
        for records in (current, {aid: nested(r) for aid, r in current.items()}):
            legacy = {(EVENT, ""): event} | {(ATTENDEE, aid): orjson.dumps(r) for aid, r in records.items()}
            restored = restore(legacy)
            writes = _batch(restored, RECORDS[cut:cut + 7])
            assert {kind for kind, _, _ in writes} >= {IDS, EVENT}  # (the replayed attendees are all persisted)
            assert any(kind == WINDOW for kind, _, _ in writes) == bool(first.curve)
            again = restore(persist(dict(legacy), writes))
            _feed(again, RECORDS[cut + 7:])
            assert _finish(again) == expected
