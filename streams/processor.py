"""One worker's processing, framework-free: a batch of raw Kafka records in; state writes and output records out.

The Faust app (streams/app.py) only moves bytes between Kafka and this class, and `streams.testing` drives the
very same class from plain lists, so every rule can be tested without a broker.

Per batch: decode and validate every record (rejects become dead letters), forward valid records that sit on
the wrong partition, apply the rest to their EventState in partition order, then once per touched event bring
derived state up to date and collect closed minute windows. When asked to persist (after every batch, or once
per checkpoint interval: the worker decides), list the state keys every event changed since the last persist,
in the order EventState.take_writes gives, the event record last -- see docs/guarantees.md "Commit order".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import orjson

from streams.domain.erasure import forget_attendee, forget_person
from streams.domain.event import (
    ATTENDEE,
    CAPPED_ACCOUNTS,
    CAPPED_ATTENDEES,
    CAPPED_EVENT_POLLS,
    CAPPED_INTERACTIONS,
    CAPPED_POLLS,
    CAPPED_WORKER_ATTENDEES,
    DUPLICATE,
    EVENT,
    IDS,
    LATE,
    REDELIVERED,
    WINDOW,
    Attendee,
    Budget,
    EventState,
    Params,
)
from streams.domain.roi import Ledger, RoiParams, organizer_of
from streams.ingest.deadletter import dead_letter
from streams.ingest.decode import (
    Rejection,
    decode_erasure,
    decode_event,
    decode_fact,
    decode_interaction,
    decode_opportunity,
)
from streams.partitioning import partition_for

log = logging.getLogger("livepulse.processor")

# State keys of an event (event ids cannot contain "/" or "|"): "<event_id>/" its event record,
# "<event_id>/<attendee_id>" an attendee, "<event_id>|w<window start>" a minute window, "<event_id>|i<n>" ids record n.
SEP = "/"
SIDE = "|"
SIDE_KIND = {WINDOW: "w", IDS: "i"}
ROI_PREFIX = "#roi/"  # ROI state keys: "#roi/<organizer_id>/<e|p|o>/<id>" ("#" cannot start an event id)
ROI_TIME = "c"  # ... and "#roi/<organizer_id>/c/time": the ledger's clock and wall-time mark (Ledger.take_time)
ROI_EXPIRY_INTERVAL_S = 3600.0  # how often ticks let time pass for the ledgers and expire what it ends
# Domain results that a cap rejected -> (cap label, the setting that sets it, what holds too many); docs/caps.md.
CAP_OF = {CAPPED_ATTENDEES: ("attendees", "max_attendees_per_event", "the event"),
          CAPPED_INTERACTIONS: ("interactions", "max_interactions_per_attendee", "the attendee"),
          CAPPED_POLLS: ("polls", "max_polls_per_attendee", "the attendee"),
          CAPPED_ACCOUNTS: ("accounts", "max_accounts_per_attendee", "the attendee"),
          CAPPED_EVENT_POLLS: ("event_polls", "max_polls_per_event", "the event"),
          CAPPED_WORKER_ATTENDEES: ("worker_attendees", "max_attendees_per_worker", "this worker")}


class InputRecord(Protocol):
    """What the Processor reads of an input record: aiokafka's ConsumerRecord in the worker, RawRecord elsewhere.
    (A protocol, not RawRecord itself: the compiled build checks declared classes at run time.)"""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class RawRecord(NamedTuple):
    """One input record built by hand (tests, the bench, run_records)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Output:
    """What one batch (or one tick) produced, in the order it must be written."""

    dead_letters: list[tuple[bytes | None, dict]] = field(default_factory=list)
    rekeyed: list[tuple[bytes, bytes | None]] = field(default_factory=list)  # (event_id key, original value)
    minutes: list[dict] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)
    leads: list[dict] = field(default_factory=list)
    live: list[dict] = field(default_factory=list)
    roi_facts: list[tuple[bytes, bytes]] = field(default_factory=list)  # (organizer_id key, fact) to its partition
    roi: list[dict] = field(default_factory=list)
    state: list[tuple[int, bytes, bytes | None]] = field(default_factory=list)  # (partition, key, value|tombstone)
    lead_tombstones: list[tuple[str, str]] = field(default_factory=list)  # (event_id, attendee_id): erased leads

    def extend(self, later: Output) -> Output:
        """Append what a later part of the same batch produced (kept in order, field by field)."""
        self.dead_letters.extend(later.dead_letters)
        self.rekeyed.extend(later.rekeyed)
        self.minutes.extend(later.minutes)
        self.summaries.extend(later.summaries)
        self.leads.extend(later.leads)
        self.live.extend(later.live)
        self.roi_facts.extend(later.roi_facts)
        self.roi.extend(later.roi)
        self.state.extend(later.state)
        return self


@dataclass
class Counters:
    """Pipeline-health counters of this worker (exported as *_total)."""

    processed: dict[str, int] = field(default_factory=dict)  # topic -> records
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> records
    duplicates: int = 0
    redelivered: int = 0
    late: int = 0
    rekeyed: int = 0
    after_retention: int = 0
    capped: dict[str, int] = field(default_factory=dict)  # cap -> records rejected by it
    oversized: dict[str, int] = field(default_factory=dict)  # output topic -> records too large to send as built
    abandoned: int = 0  # events dropped without an end
    failed: int = 0  # records whose processing raised (dead-lettered as processing_error)
    poisoned: int = 0  # records the process died on again and again, skipped (dead-lettered as poison_record)
    deferred: int = 0  # records received while their partition was not (yet) restored here; read again later
    newest_ts: int | None = None  # ts of the newest record processed (event-time lag)


class Processor:
    def __init__(self, settings, *, partitions: int) -> None:
        self.s = settings
        self.params = Params.from_settings(settings)
        self.partitions = partitions  # partition count of the input topics (co-partitioned)
        self.events: dict[str, EventState] = {}
        self.event_partition: dict[str, int] = {}
        self.forgotten: dict[str, float] = {}  # event ids expired after retention -> wall time
        self.views: dict[str, dict] = {}  # event_id -> latest snapshot or summary (what /metrics shows)
        self.roi_params = RoiParams.from_settings(settings)
        self.ledgers: dict[str, Ledger] = {}  # organizer_id -> its ROI ledger (organisers of owned partitions)
        self.ledger_partition: dict[str, int] = {}
        self.roi_views: dict[str, dict] = {}  # event_id -> latest ROI record
        self.counters = Counters()
        self.attendee_budget = Budget(settings.max_attendees_per_worker)  # attendees over all events held
        self.roi_budgets = (Budget(settings.max_opportunities_per_worker), Budget(settings.max_persons_per_worker))
        self._unpersisted: dict[str, EventState] = {}  # events changed since the last persist
        self._failures_logged: set[str] = set()  # where processing raised (each logged once with its traceback)
        self._topic_index = {settings.topic_interactions: 0, settings.topic_rekeyed: 1, settings.topic_events: 2}
        self._next_roi_expiry = 0.0  # wall time of the next ROI expiry from the tick

    # ------------------------------------------------------------------ batches
    def process(self, batch: Sequence[InputRecord], wall_now: float, *, persist: bool = True) -> Output:
        """Apply a batch. With `persist`, `out.state` lists what every event changed since the last persist; the
        caller must have it written before the next call (EventState.take_writes)."""
        out = Output()
        now_ms = int(wall_now * 1000)
        s, c = self.s, self.counters
        touched: dict[str, EventState] = {}
        ledgers: dict[str, Ledger] = {}
        roi_topics = (s.topic_opportunities, s.topic_roi_facts)
        erasure_topic = s.topic_erasure
        max_bytes, skew_ms = s.max_record_bytes, int(s.max_future_skew_s * 1000)  # (read once, not per record)
        topic_events, topic_index = s.topic_events, self._topic_index
        processed = c.processed
        for rec in batch:
            try:
                topic = rec.topic  # (aiokafka's records are plain objects: each attribute read is a dict lookup)
                processed[topic] = processed.get(topic, 0) + 1
                if topic in roi_topics:
                    self._roi_record(rec, now_ms, out, ledgers)
                    continue
                if topic == erasure_topic:
                    self._erasure_record(rec, now_ms, out, ledgers)
                    continue
                is_event = topic == topic_events
                # (two direct calls rather than one through a conditional: compiled, a C call, not a Python one)
                if is_event:
                    decoded = decode_event(rec.value, now_ms=now_ms, max_bytes=max_bytes,
                                           max_future_skew_ms=skew_ms)
                else:
                    decoded = decode_interaction(rec.value, now_ms=now_ms, max_bytes=max_bytes,
                                                 max_future_skew_ms=skew_ms)
                if isinstance(decoded, Rejection):
                    self._reject(rec, decoded, "event" if is_event else "interaction", now_ms, out)
                    continue
                event_id = decoded["event_id"]
                partition = rec.partition
                if self._home_partition(event_id, rec.key, partition) != partition:
                    # Valid but on another worker's partition (null or wrong key): send it home, keyed right.
                    c.rekeyed += 1
                    out.rekeyed.append((event_id.encode(), rec.value))
                    continue
                if event_id in self.forgotten:
                    c.after_retention += 1
                    continue
                ev = self.events.get(event_id)
                if ev is None:
                    if len(self.events) >= s.max_events:
                        self._capped(rec, "events", f"this worker already tracks {s.max_events} events "
                                     "(LIVEPULSE_MAX_EVENTS)", is_event, now_ms, out)
                        continue
                    ev = self.events[event_id] = EventState(event_id, self.params)
                    ev.budget = self.attendee_budget
                    self.event_partition[event_id] = partition
                ev.wall_last = wall_now
                touched[event_id] = ev
                if is_event:
                    if ev.apply_lifecycle(decoded):  # applied, but some key accounts left out: said in the DLQ
                        self._capped(rec, "key_accounts", f"applied without the key accounts beyond "
                                     f"{s.max_key_accounts_bytes} bytes (LIVEPULSE_MAX_KEY_ACCOUNTS_BYTES) or 10,000",
                                     True, now_ms, out)
                else:
                    result = ev.apply_interaction(decoded, topic_index.get(topic, 0), rec.offset)
                    if result == DUPLICATE:
                        c.duplicates += 1
                        continue
                    if result == REDELIVERED:  # replay after a restart: already in the restored state
                        c.redelivered += 1
                        continue
                    if result in CAP_OF:
                        cap, setting, holder = CAP_OF[result]
                        why = f"{holder} already has {getattr(s, setting)} {cap.replace('_', ' ')}"
                        self._capped(rec, cap, f"{why} (LIVEPULSE_{setting.upper()})", False, now_ms, out)
                        continue
                    if result == LATE:
                        c.late += 1
                    if c.newest_ts is None or decoded["ts"] > c.newest_ts:
                        c.newest_ts = decoded["ts"]
            except Exception as exc:  # noqa: BLE001 - a bug of ours must not stop the worker on this record
                self._failed(rec, exc, now_ms, out)
        for ev in touched.values():
            ev.advance()
            out.minutes.extend(ev.take_closed_windows())
        self._unpersisted.update(touched)
        if persist:
            self.persist_changed(out)
        for organizer, ledger in ledgers.items():
            out.roi.extend(ledger.changed())
            ledger.expire()
            self._persist_ledger(organizer, ledger, out)
            if ledger.empty():
                del self.ledgers[organizer], self.ledger_partition[organizer]
        return out

    def _roi_record(self, rec: InputRecord, now_ms: int, out: Output, ledgers: dict[str, Ledger]) -> None:
        """A CRM opportunity (validated, forwarded to its organiser's partition if need be) or an internal fact.

        What a record is follows from its topic and, on roi.facts, from its validated `fact`: a CRM record may
        carry any extra field, a `fact` of its own included, and that field means nothing."""
        s, c = self.s, self.counters
        crm = rec.topic == s.topic_opportunities
        skew_ms = int(s.max_future_skew_s * 1000)
        if crm:
            decoded = decode_opportunity(rec.value, now_ms=now_ms, max_bytes=s.max_record_bytes,
                                         max_future_skew_ms=skew_ms)
        else:
            decoded = decode_fact(rec.value, now_ms=now_ms, max_future_skew_ms=skew_ms)
        if isinstance(decoded, Rejection):
            self._reject(rec, decoded, "opportunity" if crm else "roi_fact", now_ms, out)
            return
        fact = "opportunity" if crm else decoded["fact"]
        organizer = organizer_of(decoded)
        if crm:
            key = organizer.encode()
            home = rec.partition if rec.key == key else partition_for(key, self.partitions)
            if home != rec.partition:
                c.rekeyed += 1
                forwarded = {**decoded, "fact": "opportunity", "organizer_id": organizer}  # (ours win)
                out.roi_facts.append((key, orjson.dumps(forwarded)))
                return
        if organizer not in self.ledgers and len(self.ledgers) >= s.max_organizers:
            self.counters.capped["organizers"] = self.counters.capped.get("organizers", 0) + 1
            why = f"this worker already keeps {s.max_organizers} organisers (LIVEPULSE_MAX_ORGANIZERS)"
            self._reject(rec, Rejection("cap_exceeded", why), "opportunity" if crm else "roi_fact", now_ms, out)
            return
        ledger = self._ledger(organizer, rec.partition)
        ledgers[organizer] = ledger
        if fact == "event":
            ledger.add_event(decoded)
        elif fact == "leads":
            self._roi_capped(rec, ledger.add_leads(decoded["event_id"], decoded["leads"]), now_ms, out)
        else:
            self._roi_capped(rec, ledger.add_opportunity(decoded), now_ms, out)

    def _roi_capped(self, rec: InputRecord, capped, now_ms: int, out: Output) -> None:
        """A ROI cap kept an opportunity (capped: the cap) or some leads of a fact ((cap, how many)) out."""
        if capped is None:
            return
        cap, left_out = capped if isinstance(capped, tuple) else (capped, 0)
        self.counters.capped[cap] = self.counters.capped.get(cap, 0) + 1
        setting = {"opportunities": "max_opportunities_per_organizer", "persons": "max_persons_per_organizer",
                   "worker_opportunities": "max_opportunities_per_worker",
                   "worker_persons": "max_persons_per_worker"}.get(cap)
        why = (f"applied without {left_out} leads: " if left_out else "") + (
            f"the cap {getattr(self.s, setting)} (LIVEPULSE_{setting.upper()})" if setting
            else "a person holds at most 64 events")
        crm = rec.topic == self.s.topic_opportunities
        self._reject(rec, Rejection("cap_exceeded", why), "opportunity" if crm else "roi_fact", now_ms, out)

    def _ledger(self, organizer: str, partition: int) -> Ledger:
        ledger = self.ledgers.get(organizer)
        if ledger is None:
            ledger = self.ledgers[organizer] = Ledger(organizer, self.roi_params, *self.roi_budgets)
            self.ledger_partition[organizer] = partition
        return ledger

    def _persist_ledger(self, organizer: str, ledger: Ledger, out: Output) -> None:
        partition = self.ledger_partition[organizer]
        for kind, rid, record in ledger.take_dirty():
            key = f"{ROI_PREFIX}{organizer}/{kind}/{rid}".encode()
            out.state.append((partition, key, None if record is None else orjson.dumps(record)))
            if kind == "e":
                if record is None:
                    self.roi_views.pop(rid, None)
                elif record["roi"] is not None:
                    self.roi_views[rid] = record["roi"]

    def _reject(self, rec: InputRecord, why: Rejection, schema: str, now_ms: int, out: Output) -> None:
        c = self.counters
        c.rejected[why.reason] = c.rejected.get(why.reason, 0) + 1
        out.dead_letters.append((rec.key, dead_letter(why, topic=rec.topic, partition=rec.partition, offset=rec.offset,
                                                      key=rec.key, value=rec.value, schema=schema, now_ms=now_ms)))

    def _failed(self, rec: InputRecord, exc: Exception, now_ms: int, out: Output) -> None:
        """A record whose processing raised. That is a fault of ours, not of its sender, but the record must not
        stop the worker: it would meet the same record after every restart, and so would every other worker.
        Dead-lettered with the exception (type and message: never settings, so never a secret) and logged, with
        its traceback once per place it was raised."""
        self.counters.failed += 1
        where = _raised_at(exc)
        if where not in self._failures_logged:
            self._failures_logged.add(where)
            log.error("a record of %s[%d] at offset %d could not be processed: dead-lettered (processing_error); "
                      "further failures raised at %s are counted, not logged", rec.topic, rec.partition,
                      rec.offset, where, exc_info=exc)
        schema = self._schema_of(rec.topic)
        self._reject(rec, Rejection("processing_error", f"{type(exc).__name__}: {exc}"), schema, now_ms, out)

    def _schema_of(self, topic: str) -> str:
        """The contract a record of `topic` is checked against (the DLQ record's `schema`)."""
        s = self.s
        return {s.topic_events: "event", s.topic_opportunities: "opportunity", s.topic_roi_facts: "roi_fact",
                s.topic_erasure: "erasure"}.get(topic, "interaction")

    def poisoned(self, rec: InputRecord, deaths: int, wall_now: float) -> Output:
        """A record the worker died on `deaths` times (ingest/poison.py): skipped, dead-lettered, counted."""
        out = Output()
        self.counters.poisoned += 1
        self.counters.processed[rec.topic] = self.counters.processed.get(rec.topic, 0) + 1
        why = f"a worker died {deaths} times while processing this record: skipped (LIVEPULSE_POISON_ATTEMPTS)"
        schema = self._schema_of(rec.topic)
        self._reject(rec, Rejection("poison_record", why), schema, int(wall_now * 1000), out)
        return out

    def _capped(self, rec: InputRecord, cap: str, why: str, is_event: bool, now_ms: int, out: Output) -> None:
        """A valid record a cap keeps out: dead-lettered like bad input (nothing is silently lost) and counted."""
        self.counters.capped[cap] = self.counters.capped.get(cap, 0) + 1
        self._reject(rec, Rejection("cap_exceeded", why), "event" if is_event else "interaction", now_ms, out)

    def _home_partition(self, event_id: str, key: bytes | None, partition: int) -> int:
        if key is not None and key == event_id.encode():
            return partition  # keyed right: trust the producer's partitioner, whatever it is
        return partition_for(event_id.encode(), self.partitions)

    def persist_changed(self, out: Output) -> None:
        """The state records of every event changed since the last persist (a checkpoint)."""
        events = self.events
        for event_id, ev in self._unpersisted.items():
            if events.get(event_id) is ev:  # (not expired or handed over in between)
                self._persist(ev, out)
        self._unpersisted.clear()

    # ------------------------------------------------------------------ periodic work
    def tick(self, wall_now: float, *, snapshots: bool) -> Output:
        """Summaries that are due (persisted at once), retention expiry, and (when asked) live snapshots."""
        out = Output()
        for event_id, ev in list(self.events.items()):
            if ev.summary_due(wall_now):
                summary, leads = ev.finish(wall_now)
                out.minutes.extend(ev.take_closed_windows())
                out.summaries.append(summary)
                out.leads.extend(leads)
                if self.s.roi_enabled:
                    for fact in ev.roi_facts(summary, leads):
                        out.roi_facts.append((fact["organizer_id"].encode(), orjson.dumps(fact)))
                self.views[event_id] = summary
                self._persist(ev, out)
            elif ev.summary_done and wall_now - (ev.summary_wall or wall_now) >= self.s.retention_s:
                self._expire(event_id, out, wall_now)
                continue
            elif ev.ended is None and self._abandoned(ev, wall_now):
                self.counters.abandoned += 1
                self._expire(event_id, out, wall_now)
                continue
            if snapshots and not ev.summary_done:
                view = self.views[event_id] = ev.snapshot(ev.effective_clock(wall_now))
                out.live.append(view)
        horizon = wall_now - max(self.s.retention_s, 3600.0)
        for event_id in [e for e, t in self.forgotten.items() if t < horizon]:
            del self.forgotten[event_id]
        if wall_now >= self._next_roi_expiry:
            self._next_roi_expiry = wall_now + ROI_EXPIRY_INTERVAL_S
            self.expire_ledgers(wall_now, out)
        return out

    # ------------------------------------------------------------------ data protection (docs/data-protection.md)
    def expire_ledgers(self, wall_now: float, out: Output) -> None:
        """Let wall time pass for every ROI ledger and expire what it ends (persons past their memory, events past
        their windows), tombstones written: also organisers that receive nothing any more."""
        wall_ms = int(wall_now * 1000)
        for organizer, ledger in list(self.ledgers.items()):
            ledger.pass_time(wall_ms)
            ledger.expire()
            self._persist_ledger(organizer, ledger, out)
            partition = self.ledger_partition[organizer]
            key = f"{ROI_PREFIX}{organizer}/{ROI_TIME}/time".encode()
            if ledger.empty():
                if ledger.persisted_time is not None:
                    out.state.append((partition, key, None))
                del self.ledgers[organizer], self.ledger_partition[organizer]
                continue
            time_record = ledger.take_time()
            if time_record is not None:
                out.state.append((partition, key, orjson.dumps(time_record)))

    def _erasure_record(self, rec: InputRecord, now_ms: int, out: Output, ledgers: dict[str, Ledger]) -> None:
        """An erasure request (`livepulse forget`): one copy on every partition, each erasing what this partition
        holds. Invalid requests are dead-lettered like any input."""
        s = self.s
        request = decode_erasure(rec.value, now_ms=now_ms, max_bytes=s.max_record_bytes,
                                 max_future_skew_ms=int(s.max_future_skew_s * 1000))
        if isinstance(request, Rejection):
            self._reject(rec, request, "erasure", now_ms, out)
            return
        self.erase(request["attendee_id"], rec.partition, out, ledgers, request.get("event_ids", ()))

    def erase(self, aid: str, partition: int, out: Output, ledgers: dict[str, Ledger],
              event_ids=()) -> None:
        """Erase attendee `aid` from the events and ROI ledgers of `partition`: state tombstones (and rewritten ids
        records), tombstones of their leads, and the ROI figures that change republished (by the caller: the
        ledgers touched join `ledgers`). The leads of `event_ids` homed on this partition are tombstoned too."""
        leads: dict[str, None] = {}
        for event_id in [e for e, p in self.event_partition.items() if p == partition]:
            ev = self.events[event_id]
            writes = forget_attendee(ev, aid)
            if writes is None:
                continue
            for kind, name, record in writes + ev.take_writes():
                out.state.append((partition, state_key(event_id, kind, name),
                                  None if record is None else orjson.dumps(record)))
            if ev.summary_done:
                leads[event_id] = None
        for organizer in [o for o, p in self.ledger_partition.items() if p == partition]:
            ledger = self.ledgers[organizer]
            held = forget_person(ledger, aid)
            if held is not None:
                ledgers[organizer] = ledger
                leads.update(dict.fromkeys(held))
        leads.update(dict.fromkeys(e for e in event_ids if partition_for(e.encode(), self.partitions) == partition))
        out.lead_tombstones.extend((event_id, aid) for event_id in leads)

    def _abandoned(self, ev: EventState, wall_now: float) -> bool:
        """Never ended and silent for `abandon_after_s` of wall time, also after its scheduled end if it has one
        (registrations may arrive weeks before a scheduled event)."""
        after = self.s.abandon_after_s
        if wall_now - ev.wall_last < after:
            return False
        scheduled_end = ev.meta.get("scheduled_end")
        return scheduled_end is None or wall_now - scheduled_end / 1000 >= after

    def _expire(self, event_id: str, out: Output, wall_now: float) -> None:
        ev = self.events.pop(event_id)
        self.attendee_budget.held -= len(ev.attendees)
        self.views.pop(event_id, None)
        self._unpersisted.pop(event_id, None)
        partition = self.event_partition.pop(event_id)
        for kind, name in ev.persisted_names():  # (the event record last)
            out.state.append((partition, state_key(event_id, kind, name), None))
        self.forgotten[event_id] = wall_now

    def _persist(self, ev: EventState, out: Output) -> None:
        partition, event_id = self.event_partition[ev.event_id], ev.event_id
        for kind, name, record in ev.take_writes():
            value = None if record is None else orjson.dumps(record)
            out.state.append((partition, state_key(event_id, kind, name), value))

    # ------------------------------------------------------------------ partitions
    def restore(self, partition: int, items, wall_now: float) -> int:
        """Rebuild the events of one partition from its persisted state records; returns events restored."""
        # event_id -> [event record | None, {attendee_id: Attendee}, {window start: window}, {n: ids record}]
        grouped: dict[str, list] = {}
        load_attendee = Attendee.load
        for key, value in items:
            text = key.decode()
            if text.startswith(ROI_PREFIX):
                _, organizer, kind, rid = text.split("/", 3)
                record = orjson.loads(value)
                if kind == ROI_TIME:
                    self._ledger(organizer, partition).load_time(record)
                    continue
                self._ledger(organizer, partition).load(kind, rid, record)
                if kind == "e" and record["roi"] is not None:
                    self.roi_views[rid] = record["roi"]
                continue
            event_id, sep, aid = text.partition(SEP)
            side = None
            if not sep:
                event_id, _, side = text.partition(SIDE)
            entry = grouped.get(event_id)
            if entry is None:
                entry = grouped[event_id] = [None, {}, {}, {}]
            if side:
                entry[2 if side[0] == SIDE_KIND[WINDOW] else 3][int(side[1:])] = orjson.loads(value)
            elif aid:  # (built at once: a takeover or restart may restore a million of these)
                entry[1][aid] = load_attendee(orjson.loads(value))
            else:
                entry[0] = orjson.loads(value)
        for event_id, (event, attendees, windows, id_records) in grouped.items():
            ev = EventState.from_parts(event_id, self.params, event, attendees, windows, id_records)
            ev.budget = self.attendee_budget
            replaced = self.events.get(event_id)
            self.attendee_budget.held += len(ev.attendees) - (len(replaced.attendees) if replaced else 0)
            # (may pass the limit: they were admitted elsewhere)
            ev.wall_last = wall_now
            self.events[event_id] = ev
            self.event_partition[event_id] = partition
            if ev.summary_done:  # no snapshot will come: show the final figures at once (after a takeover)
                self.views[event_id] = ev.snapshot(ev.ended if ev.ended is not None else ev.clock or 0)
        return len(grouped)

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget the events of revoked partitions (their new owner restores them from the changelog)."""
        for event_id in [e for e, p in self.event_partition.items() if p in partitions]:
            self.attendee_budget.held -= len(self.events.pop(event_id).attendees)
            del self.event_partition[event_id]
            self.views.pop(event_id, None)
            self._unpersisted.pop(event_id, None)
        for organizer in [o for o, p in self.ledger_partition.items() if p in partitions]:
            ledger = self.ledgers.pop(organizer)
            ledger.release()
            for event_id in ledger.events:
                self.roi_views.pop(event_id, None)
            del self.ledger_partition[organizer]


def state_key(event_id: str, kind: int, name) -> bytes:
    if kind == ATTENDEE:
        return f"{event_id}{SEP}{name}".encode()
    if kind == EVENT:
        return f"{event_id}{SEP}".encode()
    return f"{event_id}{SIDE}{SIDE_KIND[kind]}{name}".encode()


def lead_key(event_id: str, attendee_id: str) -> bytes:
    """The key of a lead on livepulse.leads: one per event and attendee, so compaction keeps each (event ids
    cannot contain "/"); a tombstone of it erases the lead (docs/data-protection.md)."""
    return f"{event_id}{SEP}{attendee_id}".encode()


def event_of_key(key: bytes) -> str | None:
    """The event a state key belongs to (None for ROI keys)."""
    text = key.decode()
    if text.startswith(ROI_PREFIX):
        return None
    return text.partition(SEP)[0].partition(SIDE)[0]



def _raised_at(exc: BaseException) -> str:
    """file:line of the innermost frame that raised: failures of one bug share it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return "?" if tb is None else f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
