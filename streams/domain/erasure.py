"""Erasure of one person (docs/data-protection.md): out of an event's state and out of an organiser's ROI ledger.

Plain Python, no framework. What is erased here goes out of memory now and out of the changelog by the state
writes returned (tombstones, and the event's ids records rewritten without the person's interaction ids); the
figures computed from then on no longer include the person. What was published before (minute windows,
snapshots, summaries: aggregates without names) is not rewritten. Erasing someone not held changes nothing, so a
request that is processed twice (at-least-once) or repeated does no harm.

These functions reach into EventState and Ledger on purpose: erasure is the one job that must undo every index
they keep, and it is kept here, in one place, rather than spread over the classes that grow them.
"""

from __future__ import annotations

from streams.domain.event import ATTENDEE, ID_FIELDS, ID_RECORD_FIELDS, IDS, EventState, split_ids
from streams.domain.roi import Ledger


def forget_attendee(ev: EventState, aid: str) -> list[tuple[int, object, object]] | None:
    """Remove attendee `aid` from the event; None when the event does not hold them.

    Returns the state writes that erase them, in the order to persist them, to be followed at once by the rest of
    `ev.take_writes()` (the event record last): every remembered id of the other attendees rewritten into new ids
    records, the old ids records (which mix everyone's ids) tombstoned, then the attendee's own tombstone. A crash
    after any prefix of these leaves the attendee record in place or the rewrite complete: a replay of the request
    finds the attendee and erases again, or finds nothing left to erase.
    """
    att = ev.attendees.pop(aid, None)
    if att is None:
        return None
    if ev.budget is not None:
        ev.budget.held -= 1
    ev._dirty.discard(aid)
    ev._touched.discard(aid)
    totals = ev.interaction_totals
    for kind, n in enumerate(att.counts):
        totals[kind] -= n
    owners = ev._id_owner
    for rid in att.ids[::ID_FIELDS]:
        if owners.get(rid) == aid:
            del owners[rid]
    for members in ev._members.values():
        members.discard(aid)
    for _, members in ev._prune_unsaved + ev._prune_due:
        members.discard(aid)
    for deadline, due in list(ev._timers.items()):
        if due == aid:
            del ev._timers[deadline]  # (its heap entry finds no timer when it comes up: nothing happens)
        elif isinstance(due, set):
            due.discard(aid)
    # The ids records: the memory of everyone left, from their attendees (which hold every id not yet persisted
    # too), in new records; the old ones go.
    flat: list = []
    for other, a in ev.attendees.items():
        ids = a.ids
        for i in range(0, len(ids), ID_FIELDS):
            flat += (ids[i], other, ids[i + 1], ids[i + 2], ids[i + 3])
    writes: list[tuple[int, object, object]] = []
    heap: list[tuple[int, int]] = []
    for record in split_ids(flat) if flat else ():  # (records of at most IDS_RECORD_BYTES: docs/caps.md)
        number = ev._next_id_record
        ev._next_id_record += 1
        writes.append((IDS, number, record))
        heap.append((max(record[ID_RECORD_FIELDS - 1::ID_RECORD_FIELDS]), number))
    writes += [(IDS, number, None) for _, number in ev._id_records]
    heap.sort()
    ev._id_records = heap
    ev._new_ids = []
    writes.append((ATTENDEE, aid, None))
    ev._event_dirty = True
    return writes


def forget_person(ledger: Ledger, aid: str) -> list[str] | None:
    """Remove person `aid` from an organiser's ledger: their person record, and their name on the opportunities
    that give it as the contact (the account stays: it is a company's). Returns the ids of the events the person
    record listed (their leads), or None when the ledger holds nothing of them. The caller publishes the
    figures that changed (`ledger.changed()`) and persists the dirty records (tombstones included)."""
    person = ledger.persons.pop(aid, None)
    named = [oid for oid, opp in ledger.opportunities.items()
             if opp["attendee_id"] is not None and opp["attendee_id"][1] == aid]
    if person is None and not named:
        return None
    for oid in named:
        opp = ledger.opportunities[oid]
        ledger._unindex_opportunity(oid, opp)
        opp["attendee_id"] = None
        ledger._index_opportunity(oid, opp)
        ledger._stale_opps.add(oid)  # (re-attributed by the next changed(): roi.py "incremental")
        ledger.dirty.add(("o", oid))
    if person is None:
        return []
    ledger.dirty.add(("p", aid))
    ledger._stale_persons.add(aid)  # (its lead counts and first event leave the figures)
    if ledger.person_budget is not None:
        ledger.person_budget.held -= 1
    for event_id, (attended, _registered, _grade, person_accounts, _key) in person["events"].items():
        members = ledger._event_persons.get(event_id)
        if members is not None:
            members.discard(aid)
        if attended:
            for account in person_accounts:  # what their accounts' events touched is re-attributed
                ledger._stale_opps.update(ledger._opps_of_account.get(account, ()))
    # Accounts -> events someone of them attended: a union, rebuilt without the person.
    accounts: dict[str, set[str]] = {}
    for other in ledger.persons.values():
        for event_id, (attended, _registered, _grade, person_accounts, _key) in other["events"].items():
            if attended:
                for account in person_accounts:
                    accounts.setdefault(account, set()).add(event_id)
    ledger._account_events = accounts
    return sorted(person["events"])
