"""Marketing ROI of one organiser's events: new leads, cost per lead, opportunities and revenue attributed.

Plain Python, no framework. Input are *facts* -- an ended event (`event_fact`), the leads of an event
(`leads_fact`), and versions of CRM opportunities -- and every figure is a pure function of the facts held,
never of their arrival order. Each kind of fact merges as a join (set union, min, max), so a replay after a
restart or a duplicate changes nothing: idempotent without any offset bookkeeping.

Rules (docs/semantics.md "Marketing ROI"):
- A *new lead* of event E is a person (attendee or registrant) of E whose first event of this organiser, by
  start time then event id, is E. The person memory is kept `lead_memory_days` after a person's last event.
- An opportunity is *touched* by E when its attendee attended E or someone of its account attended E, and it was
  created (its earliest version's ts) within [end of E, end of E + window]; window = the event's key-account
  window when the account is one of E's key accounts (or the attendee was flagged key account), else its normal
  window. `last_touch` gives the whole opportunity to the touching event with the latest end; `linear` splits it
  evenly over all touching events.
- pipeline = amount of attributed opportunities not lost (latest version); won = amount of attributed opportunities
  whose latest version is won and that were won within the window. Amounts are summed per currency, never across
  currencies; ROI = (won in the cost's currency - cost) / cost.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

DAY_MS = 86_400_000
DEFAULT_ORGANIZER = "default"
STAGES = ("created", "qualified", "won", "lost")
STAGE_RANK = {s: i for i, s in enumerate(STAGES)}
WON, LOST = STAGE_RANK["won"], STAGE_RANK["lost"]
MODELS = ("last_touch", "linear")
MAX_PERSON_EVENTS = 64  # most events a person record holds (it is one state record: docs/caps.md)


@dataclass(frozen=True, slots=True)
class RoiParams:
    attribution_days: int = 30
    attribution_days_key_accounts: int = 90
    model: str = "last_touch"
    lead_memory_days: int = 365
    lateness_days: int = 30
    max_opportunities: int = 20_000
    max_persons: int = 40_000

    @classmethod
    def from_settings(cls, s) -> RoiParams:
        return cls(s.attribution_days, s.attribution_days_key_accounts, s.attribution_model, s.lead_memory_days,
                   s.crm_lateness_days, s.max_opportunities_per_organizer, s.max_persons_per_organizer)


def organizer_of(record: dict) -> str:
    return record.get("organizer_id") or DEFAULT_ORGANIZER


class Tally:
    """A sum of floats that is exact whatever the order of the additions and removals (Shewchuk's partials, as in
    math.fsum): the figures of an event come out the same however its opportunities arrived, so a replay
    publishes nothing new, and a removal is an exact subtraction."""

    __slots__ = ("count", "partials")

    def __init__(self) -> None:
        self.count = 0  # terms held (a currency shows while any opportunity contributes to it, even 0)
        self.partials: list[float] = []

    def add(self, x: float, sign: int = 1) -> None:
        self.count += sign
        x = x * sign
        partials = self.partials
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]

    def value(self) -> float:
        return math.fsum(self.partials) + 0.0  # (+ 0.0: no -0.0)


class Ledger:
    """The facts of one organiser and the ROI figures derived from them.

    Persisted as one record per event, person and opportunity (`dump_*` / `load`); `dirty` names the records a
    change touched so the caller persists only those.

    Figures are kept up to date incrementally: each fact marks what it can change (persons, opportunities,
    events: `_stale_*`), and `changed()` recomputes only those -- a batch costs what it changed, not a pass over
    every opportunity (200,000 of them doubled the batch time). Each event keeps its lead counts and a Tally per
    figure; each opportunity remembers what it contributes to which event, so re-attributing it is a removal and
    an addition. Indexes are rebuilt once after a restore (`_built`).
    """

    def __init__(self, organizer_id: str, params: RoiParams, opportunity_budget=None, person_budget=None) -> None:
        self.organizer_id = organizer_id
        self.p = params
        self.events: dict[str, dict] = {}  # event_id -> event fact (+ "roi": the figures last published)
        self.persons: dict[str, dict] = {}  # attendee_id -> {"events": {event_id: [attended, registered, grade,
        #   accounts, key]}, "first": [start, event_id] of its first forgotten event | None, "last": end of its
        #   last forgotten event}
        self.opportunities: dict[str, dict] = {}  # opportunity_id -> merged versions
        self.clock = 0  # newest event time seen (event ends, opportunity versions): drives expiry
        self.dirty: set[tuple[str, str]] = set()  # ("e" | "p" | "o", id)
        self._account_events: dict[str, set[str]] = {}  # account -> events someone of it attended
        self.opportunity_budget = opportunity_budget  # worker-wide caps (domain.event.Budget), shared by ledgers
        self.person_budget = person_budget
        self._reset_indexes()
        self._built = True  # (nothing to index yet; load() clears it)

    def _reset_indexes(self) -> None:
        self._built = False
        self._event_persons: dict[str, set[str]] = {}  # event_id -> persons with an entry for it
        self._opps_of_person: dict[str, set[str]] = {}  # attendee_id -> opportunities naming them
        self._opps_of_account: dict[str, set[str]] = {}  # account -> opportunities naming it
        self._leads_of: dict[str, tuple[str, ...]] = {}  # attendee_id -> events it is counted a lead of
        self._first: dict[str, str | None] = {}  # attendee_id -> its first event (as counted in _new)
        self._leads: dict[str, int] = {}  # event_id -> leads
        self._new: dict[str, int] = {}  # event_id -> new leads
        # opportunity_id -> [(event_id, share, currency, pipeline amount | None, won amount | None)]
        self._contrib: dict[str, list[tuple]] = {}
        self._tallies: dict[str, list] = {}  # event_id -> [opportunities Tally, {cur: Tally}, {cur: Tally}]
        self._stale_persons: set[str] = set()
        self._stale_opps: set[str] = set()
        self._stale_events: set[str] = set()
        self._opp_heap: list[tuple[int, str]] = []  # (created, opportunity_id): expiry without a full pass
        self._person_heap: list[tuple[int, str]] = []  # (last, attendee_id) of persons with no event

    # ------------------------------------------------------------------ facts in
    def add_event(self, fact: dict) -> None:
        """An ended event's figures (from its summary); the last version given wins (they are final anyway)."""
        old = self.events.get(fact["event_id"])
        self.events[fact["event_id"]] = {**fact, "roi": old["roi"] if old else None}
        self.clock = max(self.clock, fact["end"])
        self.dirty.add(("e", fact["event_id"]))
        self._event_changed(fact["event_id"])

    def add_leads(self, event_id: str, leads: list[list]) -> tuple[str, int] | None:
        """Leads of an event: [attendee_id, attended, registered, grade, accounts, key_account]. Returns (cap,
        leads left out) when a cap kept some out (new persons beyond the caps, persons at MAX_PERSON_EVENTS)."""
        capped, left_out = None, 0
        for aid, attended, registered, grade, accounts, key in leads:
            person = self.persons.get(aid)
            if person is None:
                cap = self._person_cap()
                if cap is not None:
                    capped, left_out = cap, left_out + 1
                    continue
                person = self.persons[aid] = {"events": {}, "first": None, "last": 0}
                if self.person_budget is not None:
                    self.person_budget.held += 1
            elif event_id not in person["events"] and len(person["events"]) >= MAX_PERSON_EVENTS:
                capped, left_out = "person_events", left_out + 1
                continue
            person["events"][event_id] = [attended, registered, grade, sorted(accounts), key]
            self._event_persons.setdefault(event_id, set()).add(aid)
            self._stale_persons.add(aid)
            self._stale_opps.update(self._opps_of_person.get(aid, ()))
            if attended:
                for account in accounts:
                    events = self._account_events.setdefault(account, set())
                    if event_id not in events:
                        events.add(event_id)
                        self._stale_opps.update(self._opps_of_account.get(account, ()))
            self.dirty.add(("p", aid))
        return (capped, left_out) if capped is not None else None

    def _person_cap(self) -> str | None:
        if len(self.persons) >= self.p.max_persons:
            return "persons"
        budget = self.person_budget
        return "worker_persons" if budget is not None and budget.held >= budget.limit else None

    def add_opportunity(self, rec: dict) -> str | None:
        """One version of a CRM opportunity (validated against schemas/opportunity.json). Returns the cap that
        kept a new opportunity out, else None."""
        oid, ts = rec["opportunity_id"], rec["ts"]
        version = [ts, STAGE_RANK[rec["stage"]], rec.get("amount", 0), rec.get("currency")]
        opp = self.opportunities.get(oid)
        if opp is None:
            if len(self.opportunities) >= self.p.max_opportunities:
                return "opportunities"
            budget = self.opportunity_budget
            if budget is not None:
                if budget.held >= budget.limit:
                    return "worker_opportunities"
                budget.held += 1
            opp = self.opportunities[oid] = {"created": ts, "latest": version, "won": None,
                                             "attendee_id": None, "account_id": None}
            heapq.heappush(self._opp_heap, (ts, oid))
        elif ts < opp["created"]:
            heapq.heappush(self._opp_heap, (ts, oid))
        opp["created"] = min(opp["created"], ts)
        opp["latest"] = max(opp["latest"], version, key=_version_order)
        if rec["stage"] == "won":
            opp["won"] = ts if opp["won"] is None else min(opp["won"], ts)
        # Whom it belongs to: [ts, value] of the newest version naming them (CRM records get corrected).
        for field in ("attendee_id", "account_id"):
            if rec.get(field) is not None and (opp[field] is None or [ts, rec[field]] > opp[field]):
                self._unindex_opportunity(oid, opp)
                opp[field] = [ts, rec[field]]
                self._index_opportunity(oid, opp)
        self.clock = max(self.clock, ts)
        self.dirty.add(("o", oid))
        self._stale_opps.add(oid)
        return None

    # ------------------------------------------------------------------ indexes
    def _index_opportunity(self, oid: str, opp: dict) -> None:
        if opp["attendee_id"]:
            self._opps_of_person.setdefault(opp["attendee_id"][1], set()).add(oid)
        if opp["account_id"]:
            self._opps_of_account.setdefault(opp["account_id"][1], set()).add(oid)

    def _unindex_opportunity(self, oid: str, opp: dict) -> None:
        for field, index in (("attendee_id", self._opps_of_person), ("account_id", self._opps_of_account)):
            if opp[field]:
                held = index.get(opp[field][1])
                if held is not None:
                    held.discard(oid)
                    if not held:
                        del index[opp[field][1]]

    def _event_changed(self, event_id: str) -> None:
        """An event came, changed or went: its persons' first events, and every opportunity it may touch."""
        self._stale_events.add(event_id)
        stale = self._stale_opps
        for aid in self._event_persons.get(event_id, ()):
            self._stale_persons.add(aid)
            stale.update(self._opps_of_person.get(aid, ()))
            entry = self.persons[aid]["events"].get(event_id)
            if entry is not None and entry[0]:
                for account in entry[3]:
                    stale.update(self._opps_of_account.get(account, ()))
        tallies = self._tallies.get(event_id)
        if tallies:
            stale.update(tallies[3])  # the opportunities it holds a share of

    def _build(self) -> None:
        """The indexes of what load() brought (after a restore), and every figure stale once."""
        persons = self.persons
        self._event_persons = {}
        for aid, person in persons.items():
            for event_id in person["events"]:
                self._event_persons.setdefault(event_id, set()).add(aid)
            if not person["events"]:
                heapq.heappush(self._person_heap, (person["last"], aid))
        for oid, opp in self.opportunities.items():
            self._index_opportunity(oid, opp)
            heapq.heappush(self._opp_heap, (opp["created"], oid))
        self._stale_persons.update(persons)
        self._stale_opps.update(self.opportunities)
        self._stale_events.update(self.events)
        self._built = True

    # ------------------------------------------------------------------ figures out
    def _refresh(self) -> None:
        """Bring lead counts and attributions up to date for what is stale."""
        if not self._built:
            self._build()
        stale_events = self._stale_events
        for aid in self._stale_persons:
            person = self.persons.get(aid)
            old = self._leads_of.pop(aid, ())
            for event_id in old:
                self._leads[event_id] -= 1
                stale_events.add(event_id)
            first = self._first.pop(aid, None)
            if first is not None:
                self._new[first] -= 1
                stale_events.add(first)
            if person is None:
                continue
            counted = tuple(e for e, (attended, registered, *_r) in person["events"].items()
                            if attended or registered)
            if counted:
                self._leads_of[aid] = counted
                for event_id in counted:
                    self._leads[event_id] = self._leads.get(event_id, 0) + 1
                    stale_events.add(event_id)
            first = self._first_event(person)
            if first is not None:
                self._first[aid] = first
                self._new[first] = self._new.get(first, 0) + 1
                stale_events.add(first)
        self._stale_persons = set()
        for oid in self._stale_opps:
            for event_id, share, currency, pipeline, won in self._contrib.pop(oid, ()):
                self._tally(event_id, oid, share, currency, pipeline, won, -1)
            opp = self.opportunities.get(oid)
            if opp is None:
                continue
            contrib = self._attribute(opp)
            if contrib:
                self._contrib[oid] = contrib
                for event_id, share, currency, pipeline, won in contrib:
                    self._tally(event_id, oid, share, currency, pipeline, won, 1)
        self._stale_opps = set()

    def _tally(self, event_id: str, oid: str, share: float, currency: str, pipeline, won, sign: int) -> None:
        tallies = self._tallies.get(event_id)
        if tallies is None:
            tallies = self._tallies[event_id] = [Tally(), {}, {}, set()]
        tallies[0].add(share, sign)
        for amount, by_currency in ((pipeline, tallies[1]), (won, tallies[2])):
            if amount is None:
                continue
            tally = by_currency.get(currency)
            if tally is None:
                tally = by_currency[currency] = Tally()
            tally.add(amount, sign)
            if not tally.count:
                del by_currency[currency]
        if sign > 0:
            tallies[3].add(oid)
        else:
            tallies[3].discard(oid)
            if not tallies[3]:
                del self._tallies[event_id]
        self._stale_events.add(event_id)

    def _attribute(self, opp: dict) -> list[tuple]:
        """What an opportunity contributes: (event_id, share, currency, pipeline | None, won | None) per event."""
        touching = self._touching(opp)
        if not touching:
            return []
        if self.p.model == "last_touch":
            touching = [max(touching, key=lambda t: (self.events[t[0]]["end"], t[0]))]
        share = 1.0 / len(touching)
        _, stage, amount, currency = opp["latest"]
        currency = currency or "XXX"  # ISO 4217 "no currency"
        out = []
        for event_id, deadline in touching:
            pipeline = share * amount if stage != LOST else None
            won = share * amount if stage == WON and opp["won"] is not None and opp["won"] <= deadline else None
            out.append((event_id, share, currency, pipeline, won))
        return out

    def figures(self) -> dict[str, dict]:
        """The ROI record of every event held."""
        self._refresh()
        self._stale_events = set()
        return {event_id: self._figures(event_id) for event_id in self.events}

    def _figures(self, event_id: str) -> dict:
        p, ev = self.p, self.events[event_id]
        tallies = self._tallies.get(event_id)
        pipeline = {c: t.value() for c, t in tallies[1].items()} if tallies else {}
        won = {c: t.value() for c, t in tallies[2].items()} if tallies else {}
        cost, currency = ev.get("cost"), ev.get("currency")
        n_new = self._new.get(event_id, 0)
        won_same = won.get(currency, 0.0) if currency is not None else 0.0  # (keys are never None)
        return {
            "event_id": event_id,
            "organizer_id": self.organizer_id,
            "title": ev.get("title"),
            "started_at": ev["start"],
            "ended_at": ev["end"],
            "cost": cost,
            "currency": currency,
            "registrations": ev["registrations"],
            "unique_attendees": ev["unique_attendees"],
            "attendance_rate": ev["attendance_rate"],
            "engagement_score": ev["engagement_score"],
            "mqls": ev["mqls"],
            "leads": self._leads.get(event_id, 0),
            "new_leads": n_new,
            "cost_per_new_lead": cost / n_new if cost is not None and n_new else None,
            "opportunities": tallies[0].value() if tallies else 0.0,
            "pipeline": pipeline,
            "won": won,
            "roi": (won_same - cost) / cost if cost and currency else None,
            "attribution_model": p.model,
            "attribution_days": self._window_days(ev, key=False),
            "attribution_days_key_accounts": self._window_days(ev, key=True),
        }

    def changed(self) -> list[dict]:
        """ROI records that differ from what was last published (and remember them as published): only events
        whose figures may have changed are recomputed."""
        self._refresh()
        stale, self._stale_events = self._stale_events, set()
        out = []
        for event_id in sorted(stale):
            ev = self.events.get(event_id)
            if ev is None:
                continue
            figures = self._figures(event_id)
            if figures != ev["roi"]:
                ev["roi"] = figures
                self.dirty.add(("e", event_id))
                out.append(figures)
        return out
    def _first_event(self, person: dict) -> str | None:
        """The person's first event (start, then id) among held events and forgotten ones; None if forgotten."""
        best = person["first"]
        for event_id, (attended, registered, *_rest) in person["events"].items():
            ev = self.events.get(event_id)
            if ev is None or not (attended or registered):
                continue
            candidate = [ev["start"], event_id]
            if best is None or candidate < best:
                best = candidate
        return best[1] if best is not None else None

    def _touching(self, opp: dict) -> list[tuple[str, int]]:
        """(event_id, end of its window) of every event that touched this opportunity in its window."""
        created = opp["created"]
        aid = opp["attendee_id"][1] if opp["attendee_id"] else None
        account = opp["account_id"][1] if opp["account_id"] else None
        person = self.persons.get(aid) if aid is not None else None
        candidates: dict[str, bool] = {}  # event_id -> key account?
        if person is not None:
            for event_id, (attended, _registered, _grade, _accounts, key) in person["events"].items():
                if attended:
                    candidates[event_id] = key
        if account is not None:
            for event_id in self._account_events.get(account, ()):
                candidates[event_id] = candidates.get(event_id, False)
        out = []
        for event_id, key in candidates.items():
            ev = self.events.get(event_id)
            if ev is None:
                continue
            key = key or (account is not None and account in ev["key_accounts"])
            deadline = ev["end"] + self._window_days(ev, key=key) * DAY_MS
            if ev["end"] <= created <= deadline:
                out.append((event_id, deadline))
        return out

    def _window_days(self, ev: dict, *, key: bool) -> int:
        if key:
            return ev.get("attribution_days_key_accounts") or self.p.attribution_days_key_accounts
        return ev.get("attribution_days") or self.p.attribution_days


    # ------------------------------------------------------------------ bounded memory
    def expire(self) -> None:
        """Forget what can no longer change a figure once the clock (newest event time seen) has passed it by the
        CRM lateness: events past their widest window (their last ROI record is final), opportunities created
        before any held window, persons not seen for `lead_memory_days`. CRM versions older than that lateness
        arriving afterwards are applied to what is still held (docs/semantics.md "Marketing ROI"). Costs what expires, plus
        one pass over the events held (opportunities and persons wait in heaps)."""
        if not self._built:
            self._build()
        late = self.p.lateness_days * DAY_MS
        clock = self.clock - late
        widest = max(self.p.attribution_days, self.p.attribution_days_key_accounts) * DAY_MS
        for event_id, ev in list(self.events.items()):
            horizon = ev["end"] + max(widest, self._window_days(ev, key=True) * DAY_MS)
            if clock > horizon:
                self._event_changed(event_id)  # (before it goes: what it touched is re-attributed)
                del self.events[event_id]
                self.dirty.add(("e", event_id))
                for aid in self._event_persons.pop(event_id, ()):
                    person = self.persons[aid]
                    entry = person["events"].pop(event_id, None)
                    if entry is None:
                        continue
                    self.dirty.add(("p", aid))
                    if entry[0] or entry[1]:
                        candidate = [ev["start"], event_id]
                        if person["first"] is None or candidate < person["first"]:
                            person["first"] = candidate
                        person["last"] = max(person["last"], ev["end"])
                    if entry[0]:
                        for account in entry[3]:
                            events = self._account_events.get(account)
                            if events is not None:
                                events.discard(event_id)
                                if not events:
                                    del self._account_events[account]
                    if not person["events"]:
                        heapq.heappush(self._person_heap, (person["last"], aid))
        oldest_end = min((ev["end"] for ev in self.events.values()), default=clock)
        threshold = min(oldest_end, clock - widest)  # created before it: created < oldest_end, clock > created + widest
        heap = self._opp_heap
        while heap and heap[0][0] < threshold:
            created, oid = heapq.heappop(heap)
            opp = self.opportunities.get(oid)
            if opp is None or opp["created"] != created:
                continue  # (an entry left behind by an earlier version)
            self._unindex_opportunity(oid, opp)
            del self.opportunities[oid]
            if self.opportunity_budget is not None:
                self.opportunity_budget.held -= 1
            self._stale_opps.add(oid)
            self.dirty.add(("o", oid))
        memory = self.p.lead_memory_days * DAY_MS
        heap = self._person_heap
        while heap and clock > heap[0][0] + memory:
            last, aid = heapq.heappop(heap)
            gone = self.persons.get(aid)
            if gone is None or gone["events"] or gone["last"] != last:
                continue
            del self.persons[aid]
            if self.person_budget is not None:
                self.person_budget.held -= 1
            self._stale_persons.add(aid)
            self.dirty.add(("p", aid))
        if self._stale_persons or self._stale_opps:
            self._refresh()  # (what expired leaves the tallies now; the figures follow with the next changed())

    def empty(self) -> bool:
        return not (self.events or self.persons or self.opportunities)

    def release(self) -> None:
        """This ledger leaves the worker (its partition moved): give back what it held of the worker's caps."""
        if self.opportunity_budget is not None:
            self.opportunity_budget.held -= len(self.opportunities)
        if self.person_budget is not None:
            self.person_budget.held -= len(self.persons)

    # ------------------------------------------------------------------ persistence
    def take_dirty(self) -> list[tuple[str, str, dict | None]]:
        """(kind, id, record or None when deleted) of every record changed since the last call."""
        dirty, self.dirty = self.dirty, set()
        stores = {"e": self.events, "p": self.persons, "o": self.opportunities}
        return [(kind, rid, stores[kind].get(rid)) for kind, rid in sorted(dirty)]

    def load(self, kind: str, rid: str, record: dict) -> None:
        """One persisted record (a restore); indexes and tallies are rebuilt when next needed."""
        store = {"e": self.events, "p": self.persons, "o": self.opportunities}[kind]
        if rid not in store:
            budget = self.person_budget if kind == "p" else self.opportunity_budget if kind == "o" else None
            if budget is not None:
                budget.held += 1
        store[rid] = record
        if self._built:
            self._reset_indexes()  # (clears _built)
        if kind == "p":
            for event_id, (attended, _r, _g, accounts, _k) in record["events"].items():
                if attended:
                    for account in accounts:
                        self._account_events.setdefault(account, set()).add(event_id)
        elif kind == "e":
            self.clock = max(self.clock, record["end"])
        else:
            self.clock = max(self.clock, record["latest"][0])


    # ------------------------------------------------------------------ time passing (docs/data-protection.md)
    # The clock moves with the facts; between them, with the wall clock: an organiser that receives nothing more
    # still has its events, opportunities and persons expire on time. (Class defaults: set by the first call.)
    wall_ms: int | None = None  # wall time the clock was last advanced to
    persisted_time: list | None = None  # the time record last handed out to persist

    def pass_time(self, wall_ms: int) -> None:
        """Advance the clock by the wall time passed since the last call (the first call only sets the mark)."""
        if self.wall_ms is not None and wall_ms > self.wall_ms:
            self.clock += wall_ms - self.wall_ms
        if self.wall_ms is None or wall_ms > self.wall_ms:
            self.wall_ms = wall_ms

    def take_time(self) -> dict | None:
        """The time record ({clock, wall_ms}) when it changed since the last call: persisted, a restart goes on
        from it (and counts the time it was down), so restarts do not hold an idle organiser's clock back."""
        if self.wall_ms is None or self.persisted_time == [self.clock, self.wall_ms]:
            return None
        self.persisted_time = [self.clock, self.wall_ms]
        return {"clock": self.clock, "wall_ms": self.wall_ms}

    def load_time(self, record: dict) -> None:
        self.clock = max(self.clock, record["clock"])
        self.wall_ms = record["wall_ms"]
        self.persisted_time = [record["clock"], record["wall_ms"]]


def _version_order(version: list) -> tuple:
    ts, rank, amount, currency = version
    return ts, rank, amount, currency or ""

