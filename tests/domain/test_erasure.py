"""Erasure in the domain (streams/domain/erasure.py) and the ledger's clock between facts (Ledger.pass_time):
one person leaves an event's state, its persisted records and an organiser's ledger; idle ledgers expire."""

from __future__ import annotations

from streams.domain.erasure import forget_attendee, forget_person
from streams.domain.event import ATTENDEE, DUPLICATE, IDS, EventState, Params
from streams.domain.roi import DAY_MS, Ledger, RoiParams
from streams.settings import Settings

T0 = 1_768_435_200_000
PARAMS = Params.from_settings(Settings())


def interaction(n: int, aid: str, kind: str, at_s: float, **extra) -> dict:
    return {"id": f"i{n}", "event_id": "ev", "attendee_id": aid, "type": kind, "ts": T0 + int(at_s * 1000), **extra}


def persist(ev: EventState, store: dict, writes=None) -> None:
    """Apply state writes to a changelog-like dict {(kind, name): record}."""
    for kind, name, record in writes if writes is not None else ev.take_writes():
        if record is None:
            store.pop((kind, name), None)
        else:
            store[(kind, name)] = record


def feed(ev: EventState, records: list[dict], store: dict, offset: int = 0) -> int:
    for rec in sorted(records, key=lambda r: r["ts"]):
        ev.apply_interaction(rec, 0, offset)
        offset += 1
    ev.advance()
    persist(ev, store)
    return offset


def session(aid: str, start: int, at: float) -> list[dict]:
    return [interaction(start, aid, "registration", at - 600, account_id=f"acct-{aid}"),
            interaction(start + 1, aid, "join", at), interaction(start + 2, aid, "chat", at + 30),
            interaction(start + 3, aid, "heartbeat", at + 60), interaction(start + 4, aid, "leave", at + 200)]


def test_an_erased_attendee_leaves_memory_and_every_persisted_record():
    ev, store = EventState("ev", PARAMS), {}
    ev.apply_lifecycle({"event_id": "ev", "type": "started", "ts": T0})
    offset = feed(ev, session("x", 0, 10) + session("y", 10, 20), store)
    offset = feed(ev, session("z", 20, 300), store, offset)
    old_ids = {name for kind, name in store if kind == IDS}
    assert len(old_ids) == 2 and (ATTENDEE, "x") in store

    writes = forget_attendee(ev, "x")
    persist(ev, store, writes + ev.take_writes())
    assert "x" not in ev.attendees
    assert ev.interaction_totals == [2, 2, 2, 2, 2, 0, 0, 0, 0]  # y's and z's records only
    assert not any("x" in map(str, record) for (kind, _), record in store.items() if kind == IDS)
    assert (ATTENDEE, "x") not in store and not old_ids & {name for kind, name in store if kind == IDS}
    assert not any("acct-x" in str(record) for record in store.values())

    # Restored from what was persisted: the same event without x, whose de-duplication memory of y and z holds.
    restored = EventState.load("ev", PARAMS, dict(store))
    assert set(restored.attendees) == {"y", "z"}
    assert restored.apply_interaction(interaction(11, "y", "join", 20), 0, offset + 1) == DUPLICATE
    # Figures computed from then on: as if x had never been there (x voted no poll: polls seen are the same).
    ended = {"event_id": "ev", "type": "ended", "ts": T0 + 3_600_000}
    without = EventState("ev", PARAMS)
    without.apply_lifecycle({"event_id": "ev", "type": "started", "ts": T0})
    feed(without, session("y", 10, 20) + session("z", 20, 300), {})
    for state in (ev, restored, without):
        state.apply_lifecycle(ended)
    keys = ("unique_attendees", "registrations", "walk_ins", "interactions", "total_dwell_seconds",
            "engagement_score", "attendance_rate", "leads_by_grade", "key_accounts_covered")
    (_, leads_ev), (_, leads_restored), (summary_without, leads_without) = (
        s.finish(1e9) for s in (ev, restored, without))
    assert leads_ev == leads_restored == leads_without
    assert {k: ev.snapshot(T0 + 3_600_000)[k] for k in keys} == {k: summary_without[k] for k in keys}


def test_erasing_someone_not_held_changes_nothing():
    ev, store = EventState("ev", PARAMS), {}
    feed(ev, session("y", 0, 10), store)
    assert forget_attendee(ev, "x") is None
    assert ev.take_writes() == []


def test_erasure_while_present_leaves_no_timer_or_window_member_behind():
    ev, store = EventState("ev", PARAMS), {}
    ev.apply_lifecycle({"event_id": "ev", "type": "started", "ts": T0})
    feed(ev, [interaction(0, "x", "join", 5), interaction(1, "y", "join", 6)], store)
    persist(ev, store, forget_attendee(ev, "x") + ev.take_writes())
    # The clock moves on past x's idle timeout and several windows: nothing refers to x any more.
    offset = feed(ev, [interaction(2, "y", "heartbeat", 100), interaction(3, "y", "heartbeat", 400)], store, 2)
    assert ev.snapshot(T0 + 400_000)["attendees_current"] == 1
    assert offset == 4 and all(w["attendees_end"] <= 1 for w in ev.take_closed_windows())


def ledger_with_people() -> Ledger:
    ledger = Ledger("org", RoiParams())
    for n, (event_id, end) in enumerate((("e1", T0 + 3_600_000), ("e2", T0 + DAY_MS))):
        ledger.add_event({"organizer_id": "org", "event_id": event_id, "fact": "event", "title": None,
                          "start": end - 3_600_000, "end": end, "cost": 1000.0, "currency": "EUR",
                          "key_accounts": [], "attribution_days": None, "attribution_days_key_accounts": None,
                          "registrations": 2, "unique_attendees": 2, "attendance_rate": 1.0,
                          "engagement_score": 50.0, "mqls": 1})
    ledger.add_leads("e1", [["x", True, True, "A", ["acme"], False], ["y", True, True, "B", ["globex"], False]])
    ledger.add_leads("e2", [["x", True, True, "A", ["acme"], False]])
    ledger.add_opportunity({"opportunity_id": "o1", "attendee_id": "x", "stage": "created", "ts": T0 + 2 * DAY_MS,
                            "amount": 100.0, "currency": "EUR"})
    ledger.changed()
    ledger.take_dirty()
    return ledger


def test_an_erased_person_leaves_the_ledger_and_its_figures():
    ledger = ledger_with_people()
    before = ledger.figures()
    assert (before["e1"]["leads"], before["e2"]["opportunities"]) == (2, 1)
    assert forget_person(ledger, "x") == ["e1", "e2"]
    after = {r["event_id"]: r for r in ledger.changed()}
    assert (after["e1"]["leads"], after["e1"]["new_leads"]) == (1, 1)  # y only
    assert (after["e2"]["leads"], after["e2"]["opportunities"]) == (0, 0)  # o1 named x, and acme attended no more
    dirty = {(kind, rid): record for kind, rid, record in ledger.take_dirty()}
    assert dirty[("p", "x")] is None and dirty[("o", "o1")]["attendee_id"] is None
    assert ledger._account_events == {"globex": {"e1"}}
    assert forget_person(ledger, "x") is None  # a second time: nothing left


def test_an_idle_ledger_expires_by_the_wall_clock_and_says_so_in_its_time_record():
    ledger = ledger_with_people()
    p = ledger.p
    wall = T0 + DAY_MS  # the wall clock as the last fact arrived
    ledger.pass_time(wall)
    ledger.expire()
    assert ledger.take_dirty() == [] and ledger.persons
    # No fact for longer than the widest window + the CRM lateness: the events' figures are final, they go.
    later = wall + (p.attribution_days_key_accounts + p.lateness_days + 2) * DAY_MS
    ledger.pass_time(later)
    ledger.expire()
    gone = {(kind, rid) for kind, rid, record in ledger.take_dirty() if record is None}
    assert {("e", "e1"), ("e", "e2")} <= gone and ledger.persons  # persons are remembered lead_memory_days
    time_record = ledger.take_time()
    assert time_record == {"clock": ledger.clock, "wall_ms": later} and ledger.take_time() is None
    # Restarted from that record after being down for the rest of the lead memory: the time passed counts.
    restarted = Ledger("org", p)
    for kind, rid, record in [("p", aid, person) for aid, person in ledger.persons.items()]:
        restarted.load(kind, rid, record)
    restarted.load_time(time_record)
    restarted.pass_time(later + (p.lead_memory_days + p.lateness_days + 2) * DAY_MS)
    restarted.expire()
    assert restarted.persons == {} and restarted.empty()
    assert {(kind, rid) for kind, rid, record in restarted.take_dirty() if record is None} == {("p", "x"),
                                                                                              ("p", "y")}
