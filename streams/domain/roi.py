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

from dataclasses import dataclass

DAY_MS = 86_400_000
DEFAULT_ORGANIZER = "default"
STAGES = ("created", "qualified", "won", "lost")
STAGE_RANK = {s: i for i, s in enumerate(STAGES)}
MODELS = ("last_touch", "linear")


@dataclass(frozen=True, slots=True)
class RoiParams:
    attribution_days: int = 30
    attribution_days_key_accounts: int = 90
    model: str = "last_touch"
    lead_memory_days: int = 365
    lateness_days: int = 30

    @classmethod
    def from_settings(cls, s) -> RoiParams:
        return cls(s.attribution_days, s.attribution_days_key_accounts, s.attribution_model, s.lead_memory_days,
                   s.crm_lateness_days)


def organizer_of(record: dict) -> str:
    return record.get("organizer_id") or DEFAULT_ORGANIZER


class Ledger:
    """The facts of one organiser and the ROI figures derived from them.

    Persisted as one record per event, person and opportunity (`dump_*` / `load`); `dirty` names the records a
    change touched so the caller persists only those.
    """

    def __init__(self, organizer_id: str, params: RoiParams) -> None:
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

    # ------------------------------------------------------------------ facts in
    def add_event(self, fact: dict) -> None:
        """An ended event's figures (from its summary); the last version given wins (they are final anyway)."""
        old = self.events.get(fact["event_id"])
        self.events[fact["event_id"]] = {**fact, "roi": old["roi"] if old else None}
        self.clock = max(self.clock, fact["end"])
        self.dirty.add(("e", fact["event_id"]))

    def add_leads(self, event_id: str, leads: list[list]) -> None:
        """Leads of an event: [attendee_id, attended, registered, grade, accounts, key_account]."""
        for aid, attended, registered, grade, accounts, key in leads:
            person = self.persons.get(aid)
            if person is None:
                person = self.persons[aid] = {"events": {}, "first": None, "last": 0}
            person["events"][event_id] = [attended, registered, grade, sorted(accounts), key]
            if attended:
                for account in accounts:
                    self._account_events.setdefault(account, set()).add(event_id)
            self.dirty.add(("p", aid))

    def add_opportunity(self, rec: dict) -> None:
        """One version of a CRM opportunity (validated against schemas/opportunity.json)."""
        oid, ts = rec["opportunity_id"], rec["ts"]
        version = [ts, STAGE_RANK[rec["stage"]], rec.get("amount", 0), rec.get("currency")]
        opp = self.opportunities.get(oid)
        if opp is None:
            opp = self.opportunities[oid] = {"created": ts, "latest": version, "won": None,
                                             "attendee_id": None, "account_id": None}
        opp["created"] = min(opp["created"], ts)
        opp["latest"] = max(opp["latest"], version, key=_version_order)
        if rec["stage"] == "won":
            opp["won"] = ts if opp["won"] is None else min(opp["won"], ts)
        # Whom it belongs to: [ts, value] of the newest version naming them (CRM records get corrected).
        for field in ("attendee_id", "account_id"):
            if rec.get(field) is not None and (opp[field] is None or [ts, rec[field]] > opp[field]):
                opp[field] = [ts, rec[field]]
        self.clock = max(self.clock, ts)
        self.dirty.add(("o", oid))

    # ------------------------------------------------------------------ figures out
    def figures(self) -> dict[str, dict]:
        """The ROI record of every event held (one pass over persons and opportunities)."""
        p = self.p
        new_leads = dict.fromkeys(self.events, 0)
        leads = dict.fromkeys(self.events, 0)
        for person in self.persons.values():
            first = self._first_event(person)
            for event_id, (attended, registered, *_rest) in person["events"].items():
                if event_id in leads and (attended or registered):
                    leads[event_id] += 1
            if first is not None and first in new_leads:
                new_leads[first] += 1
        opportunities = dict.fromkeys(self.events, 0.0)
        pipeline: dict[str, dict[str, float]] = {e: {} for e in self.events}
        won: dict[str, dict[str, float]] = {e: {} for e in self.events}
        for oid in sorted(self.opportunities):
            opp = self.opportunities[oid]
            touching = self._touching(opp)
            if not touching:
                continue
            if p.model == "last_touch":
                touching = [max(touching, key=lambda t: (self.events[t[0]]["end"], t[0]))]
            share = 1.0 / len(touching)
            _, stage, amount, currency = opp["latest"]
            for event_id, deadline in touching:
                opportunities[event_id] += share
                if STAGES[stage] != "lost":
                    _add(pipeline[event_id], currency, share * amount)
                if STAGES[stage] == "won" and opp["won"] is not None and opp["won"] <= deadline:
                    _add(won[event_id], currency, share * amount)
        out = {}
        for event_id, ev in self.events.items():
            cost, currency = ev.get("cost"), ev.get("currency")
            n_new = new_leads[event_id]
            won_same = won[event_id].get(currency, 0.0) if currency is not None else 0.0  # (keys are never None)
            out[event_id] = {
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
                "leads": leads[event_id],
                "new_leads": n_new,
                "cost_per_new_lead": cost / n_new if cost is not None and n_new else None,
                "opportunities": opportunities[event_id],
                "pipeline": pipeline[event_id],
                "won": won[event_id],
                "roi": (won_same - cost) / cost if cost and currency else None,
                "attribution_model": p.model,
                "attribution_days": self._window_days(ev, key=False),
                "attribution_days_key_accounts": self._window_days(ev, key=True),
            }
        return out

    def changed(self) -> list[dict]:
        """ROI records that differ from what was last published (and remember them as published)."""
        out = []
        for event_id, figures in self.figures().items():
            ev = self.events[event_id]
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
        arriving afterwards are applied to what is still held (docs/semantics.md "Marketing ROI")."""
        late = self.p.lateness_days * DAY_MS
        clock = self.clock - late
        widest = max(self.p.attribution_days, self.p.attribution_days_key_accounts) * DAY_MS
        for event_id, ev in list(self.events.items()):
            horizon = ev["end"] + max(widest, self._window_days(ev, key=True) * DAY_MS)
            if clock > horizon:
                del self.events[event_id]
                self.dirty.add(("e", event_id))
                for aid, person in self.persons.items():
                    entry = person["events"].pop(event_id, None)
                    if entry is not None:
                        self.dirty.add(("p", aid))
                    if entry is not None and (entry[0] or entry[1]):
                        candidate = [ev["start"], event_id]
                        if person["first"] is None or candidate < person["first"]:
                            person["first"] = candidate
                        person["last"] = max(person["last"], ev["end"])
                for account, events in list(self._account_events.items()):
                    events.discard(event_id)
                    if not events:
                        del self._account_events[account]
        oldest_end = min((ev["end"] for ev in self.events.values()), default=clock)
        for oid, opp in list(self.opportunities.items()):
            if opp["created"] < oldest_end and clock > opp["created"] + widest:
                del self.opportunities[oid]
                self.dirty.add(("o", oid))
        memory = self.p.lead_memory_days * DAY_MS
        for aid, person in list(self.persons.items()):
            if not person["events"] and clock > person["last"] + memory:
                del self.persons[aid]
                self.dirty.add(("p", aid))

    def empty(self) -> bool:
        return not (self.events or self.persons or self.opportunities)

    # ------------------------------------------------------------------ persistence
    def take_dirty(self) -> list[tuple[str, str, dict | None]]:
        """(kind, id, record or None when deleted) of every record changed since the last call."""
        dirty, self.dirty = self.dirty, set()
        stores = {"e": self.events, "p": self.persons, "o": self.opportunities}
        return [(kind, rid, stores[kind].get(rid)) for kind, rid in sorted(dirty)]

    def load(self, kind: str, rid: str, record: dict) -> None:
        {"e": self.events, "p": self.persons, "o": self.opportunities}[kind][rid] = record
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


def _add(totals: dict[str, float], currency: str | None, amount: float) -> None:
    key = currency or "XXX"  # ISO 4217 "no currency"
    totals[key] = totals.get(key, 0.0) + amount
