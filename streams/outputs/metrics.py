"""Prometheus exposition built at scrape time from the state this worker owns right now.

A custom collector (rather than long-lived Gauge objects) means a worker stops exporting an event the moment
its partition is revoked or the event expires: no stale series, nothing to unregister. Event series carry the
label `event_id` (and `livepulse_event_info` the event's `organizer_id`, for joins); attendee ids never appear
anywhere in the exposition. The worker's registry (worker_registry) adds prometheus_client's standard process,
platform and GC collectors, so restarts, memory, CPU and file descriptors sit next to LivePulse's own figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import generate_latest

from streams.domain.event import SESSION_BUCKETS, TYPES
from streams.domain.roi import DEFAULT_ORGANIZER
from streams.outputs.snapshots import SnapshotPacing
from streams.processor import CAP_OF, Processor

EVENT_GAUGES = (
    ("livepulse_attendees_current", "Attendees in the room now (event clock).", "attendees_current"),
    ("livepulse_attendees_peak", "Most attendees in the room at once so far.", "attendees_peak"),
    ("livepulse_unique_attendees", "Distinct attendees ever present.", "unique_attendees"),
    ("livepulse_registrations", "Distinct registered attendees.", "registrations"),
    ("livepulse_walk_ins", "Attendees present without a registration.", "walk_ins"),
    ("livepulse_engagement_score", "Mean engagement score of unique attendees (0-100).", "engagement_score"),
    ("livepulse_key_account_attendees", "Unique attendees from key accounts.", "key_account_attendees"),
    ("livepulse_poll_voters", "Distinct attendees who voted in a poll.", "poll_voters"),
    ("livepulse_cta_clickers", "Distinct attendees who clicked a call to action.", "cta_clickers"),
    ("livepulse_mqls", "Marketing-qualified leads (grade A or B) so far.", "mqls"),
)
# Shown only when defined (no cost, no registrations, no key accounts...): absent rather than a misleading 0.
OPTIONAL_EVENT_GAUGES = (
    ("livepulse_key_account_share", "Unique attendees from key accounts / unique attendees.", "key_account_share"),
    ("livepulse_key_account_coverage", "Targeted key accounts with an attendee / targeted key accounts.",
     "key_account_coverage"),
)
COST_GAUGES = (
    ("livepulse_cost_per_registration", "Event cost / registrations, in the cost's currency.", "cost_per_registration"),
    ("livepulse_cost_per_attendee", "Event cost / unique attendees, in the cost's currency.", "cost_per_attendee"),
)
NO_CURRENCY = "XXX"  # ISO 4217 "no currency"
# Every cap is exported from the start (at 0): a rate over a series that appears only on its first hit misses it.
# Every cap label, exported at 0 from the start (an alert on a rate needs the series before the first hit).
CAPS = tuple(sorted({"events", "organizers", "key_accounts", "opportunities", "persons", "worker_opportunities",
                     "worker_persons", "person_events", *(entry[0] for entry in CAP_OF.values())}))
DAY_S = 86_400
# The ROI ledger's audience funnel of an ended event (kept as long as the ledger holds the event: the attribution
# window, weeks, while the engagement-stage gauges above go LIVEPULSE_RETENTION_S after the summary).
ROI_FUNNEL = (
    ("livepulse_roi_registrations", "Distinct registrants of the event (the ROI ledger's copy).", "registrations"),
    ("livepulse_roi_attendees", "Unique attendees of the event (the ROI ledger's copy).", "unique_attendees"),
    ("livepulse_roi_mqls", "Marketing-qualified leads of the event (the ROI ledger's copy).", "mqls"),
)


BATCH_BUCKETS = (1, 10, 100, 500, 1000, 2000, 5000, 10000)


def cumulative_buckets(bounds: tuple, counts: list[int]) -> list[tuple[str, int]]:
    """(le, cumulative count) pairs from per-bucket counts; le formatted as Prometheus clients do ("900.0")."""
    out, cumulative = [], 0
    for bound, n in zip((*(str(float(b)) for b in bounds), "+Inf"), counts):
        cumulative += n
        out.append((bound, cumulative))
    return out


class BatchSizes:
    """Cumulative histogram of batch sizes (a plain object the worker updates once per batch)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BATCH_BUCKETS) + 1)
        self.total = 0

    def observe(self, n: int) -> None:
        i = 0
        while i < len(BATCH_BUCKETS) and n > BATCH_BUCKETS[i]:
            i += 1
        self.counts[i] += 1
        self.total += n


class ConsumerLag:
    """Input records not yet processed on the partitions this worker owns, per (topic, partition): the partition's
    high watermark minus the next offset to process, as the worker saw them after its last batch of that partition
    (it updates a partition once per batch, and forgets the partitions it no longer owns after a rebalance)."""

    def __init__(self, topics: Iterable[str], interaction_topics: Iterable[str] = ()) -> None:
        self.topics = tuple(sorted(topics))  # the label values: the input topics, every one always exported
        self.remaining: dict[tuple[str, int], int] = {}
        self.last_read: dict[str, float] = {}  # topic -> wall time this worker last processed a record of it
        self.interaction_topics = frozenset(interaction_topics)  # (whatever they are named: configurable)
        self.last_interaction: float | None = None

    def read(self, topic: str, wall: float) -> None:
        """Records of `topic` were processed at wall time `wall` (once per partition and batch): a feed that stops
        shows as a growing silence (alert LivePulseInputStalled)."""
        self.last_read[topic] = wall
        if topic in self.interaction_topics:
            self.last_interaction = wall

    def update(self, topic: str, partition: int, highwater: int, next_offset: int) -> None:
        self.remaining[(topic, partition)] = max(0, highwater - next_offset)

    def keep(self, partitions: set[int]) -> None:
        """Forget the partitions this worker does not own (any more)."""
        self.remaining = {tp: n for tp, n in self.remaining.items() if tp[1] in partitions}

    def by_topic(self) -> dict[str, int]:
        totals = dict.fromkeys(self.topics, 0)
        for (topic, _), n in self.remaining.items():
            if topic in totals:
                totals[topic] += n
        return totals


class Ownership:
    """The input partitions this worker owns and how many rebalances it went through (the worker updates it after
    each recovery): a worker that owns nothing, or rebalances all the time, shows on the Pipeline dashboard."""

    def __init__(self) -> None:
        self.partitions = 0
        self.rebalances = 0

    def recovered(self, partitions: int) -> None:
        self.partitions = partitions
        self.rebalances += 1


class LivePulseCollector:
    def __init__(self, processor: Processor, batch_sizes: BatchSizes | None = None,
                 consumer_lag: ConsumerLag | None = None, snapshots: SnapshotPacing | None = None,
                 ownership: Ownership | None = None) -> None:
        self.processor = processor
        self.batch_sizes = batch_sizes
        self.consumer_lag = consumer_lag
        self.snapshots = snapshots
        self.ownership = ownership

    def collect(self):
        proc = self.processor
        yield from self._event_metrics(proc)
        yield from channel_metrics(proc)
        yield from self._roi_metrics(proc)
        yield from self._pipeline_metrics(proc)

    def _event_metrics(self, proc: Processor):
        views = proc.views
        now = time.time()
        info = GaugeMetricFamily("livepulse_event_info", "1 per event held, with its organiser (join on event_id).",
                                 labels=["event_id", "organizer_id"])
        delay = GaugeMetricFamily(
            "livepulse_event_data_delay_seconds",
            "How far the event's figures are behind: wall clock minus the newest event time of its records while it "
            "is live (it grows when the input stalls); 0 once its final summary is out.", labels=["event_id"])
        dwell_all = GaugeMetricFamily(
            "livepulse_dwell_including_open_seconds",
            "Dwell of all attendees, open sessions included up to the snapshot's event time.", labels=["event_id"])
        gauges = {name: GaugeMetricFamily(name, doc, labels=["event_id"]) for name, doc, _ in EVENT_GAUGES}
        ratio = GaugeMetricFamily(
            "livepulse_attendance_ratio", "Registered attendees present / registrations.", labels=["event_id"]
        )
        interactions = CounterMetricFamily(
            "livepulse_interactions", "Interactions by type (de-duplicated).", labels=["event_id", "type"]
        )
        dwell = CounterMetricFamily(
            "livepulse_dwell_seconds", "Dwell time of all attendees up to their last sign of life.",
            labels=["event_id"],
        )
        sessions = HistogramMetricFamily(
            "livepulse_session_duration_seconds", "Duration of completed presence sessions.", labels=["event_id"]
        )
        start = GaugeMetricFamily(
            "livepulse_event_start_timestamp_seconds", "When the event started (event time).", labels=["event_id"]
        )
        end = GaugeMetricFamily(
            "livepulse_event_end_timestamp_seconds", "When the event ended (event time).", labels=["event_id"]
        )
        scheduled = {
            field: GaugeMetricFamily(f"livepulse_event_{field}_timestamp_seconds",
                                     f"The event's {field.replace('_', ' ')} from its metadata (event time).",
                                     labels=["event_id"])
            for field in ("scheduled_start", "scheduled_end")
        }
        clock = GaugeMetricFamily(
            "livepulse_event_clock_timestamp_seconds", "Newest event time of the event.", labels=["event_id"]
        )
        optional = {name: GaugeMetricFamily(name, doc, labels=["event_id"]) for name, doc, _ in OPTIONAL_EVENT_GAUGES}
        costs = {name: GaugeMetricFamily(name, doc, labels=["event_id", "currency"]) for name, doc, _ in COST_GAUGES}
        grades = GaugeMetricFamily("livepulse_leads", "Leads (attendees and registered no-shows) by grade so far.",
                                   labels=["event_id", "grade"])
        for event_id, view in views.items():
            ev = proc.events.get(event_id)
            if ev is None:
                continue
            labels = [event_id]
            info.add_metric([event_id, ev.meta.get("organizer_id") or DEFAULT_ORGANIZER], 1)
            if ev.summary_done:
                delay.add_metric(labels, 0.0)
            elif ev.clock is not None:
                delay.add_metric(labels, max(0.0, now - ev.clock / 1000))
            dwell_all.add_metric(labels, view["total_dwell_seconds"])
            for name, _, field in EVENT_GAUGES:
                gauges[name].add_metric(labels, view[field])
            for name, _, field in OPTIONAL_EVENT_GAUGES:
                if view[field] is not None:
                    optional[name].add_metric(labels, view[field])
            for name, _, field in COST_GAUGES:
                if view[field] is not None:
                    costs[name].add_metric([event_id, view["currency"] or NO_CURRENCY], view[field])
            for grade, n in view["leads_by_grade"].items():
                grades.add_metric([event_id, grade], n)
            if view["attendance_rate"] is not None:
                ratio.add_metric(labels, view["attendance_rate"])
            for t, n in zip(TYPES, ev.interaction_totals):  # up to the last batch (the view: the last snapshot)
                interactions.add_metric([event_id, t], n)
            dwell.add_metric(labels, ev.settled_dwell_ms / 1000)
            sessions.add_metric(labels, cumulative_buckets(SESSION_BUCKETS, ev.session_hist), ev.session_sum_ms / 1000)
            if ev.started is not None:
                start.add_metric(labels, ev.started / 1000)
            if ev.ended is not None:
                end.add_metric(labels, ev.ended / 1000)
            if ev.clock is not None:
                clock.add_metric(labels, ev.clock / 1000)
            for field, family in scheduled.items():
                if ev.meta.get(field) is not None:
                    family.add_metric(labels, ev.meta[field] / 1000)
        yield from (info, delay, dwell_all)
        yield from gauges.values()
        yield from optional.values()
        yield from costs.values()
        yield from (grades, ratio, interactions, dwell, sessions, start, end, *scheduled.values(), clock)

    def _roi_metrics(self, proc: Processor):
        """Figures of the livepulse.roi records this worker owns (labels event_id, organizer_id[, currency])."""
        labels = ["event_id", "organizer_id"]
        new_leads = GaugeMetricFamily("livepulse_roi_new_leads", "Leads whose first event of the organiser this is.",
                                      labels=labels)
        opportunities = GaugeMetricFamily("livepulse_roi_opportunities",
                                          "Opportunities attributed to the event (fractional under linear).",
                                          labels=labels)
        ratio = GaugeMetricFamily("livepulse_roi_ratio", "(won in the cost's currency - cost) / cost.", labels=labels)
        money = {
            name: GaugeMetricFamily(name, doc, labels=[*labels, "currency"])
            for name, doc in (
                ("livepulse_roi_cost", "Event cost."),
                ("livepulse_roi_cost_per_new_lead", "Event cost / new leads."),
                ("livepulse_roi_pipeline_amount", "Amount of attributed opportunities not lost."),
                ("livepulse_roi_won_amount", "Amount of attributed opportunities won within the window."),
            )
        }
        funnel = {name: GaugeMetricFamily(name, doc, labels=labels) for name, doc, _ in ROI_FUNNEL}
        window_end = GaugeMetricFamily(
            "livepulse_roi_attribution_end_timestamp_seconds",
            "End of the event's widest attribution window (key accounts' included): until then its figures are "
            "provisional.", labels=labels)
        provisional = GaugeMetricFamily(
            "livepulse_roi_provisional",
            "1 while the attribution window is open (by the wall clock and by the newest CRM time the ledger saw), "
            "0 once the figures are final.", labels=labels)
        now = time.time()
        for event_id, r in proc.roi_views.items():
            ids = [event_id, r["organizer_id"]]
            for name, _, field in ROI_FUNNEL:
                if r.get(field) is not None:
                    funnel[name].add_metric(ids, r[field])
            days = max(r.get("attribution_days") or 0, r.get("attribution_days_key_accounts") or 0)
            end = r["ended_at"] / 1000 + days * DAY_S
            window_end.add_metric(ids, end)
            ledger = proc.ledgers.get(r["organizer_id"])
            seen = max(now, ledger.clock / 1000) if ledger is not None else now
            provisional.add_metric(ids, 1.0 if seen < end else 0.0)
            new_leads.add_metric(ids, r["new_leads"])
            opportunities.add_metric(ids, r["opportunities"])
            if r["roi"] is not None:
                ratio.add_metric(ids, r["roi"])
            currency = r["currency"] or NO_CURRENCY
            for name, value in (("livepulse_roi_cost", r["cost"]),
                                ("livepulse_roi_cost_per_new_lead", r["cost_per_new_lead"])):
                if value is not None:
                    money[name].add_metric([*ids, currency], value)
            for name, amounts in (("livepulse_roi_pipeline_amount", r["pipeline"]),
                                  ("livepulse_roi_won_amount", r["won"])):
                for cur, amount in sorted(amounts.items()):
                    money[name].add_metric([*ids, cur], amount)
        yield from (new_leads, opportunities, ratio, *money.values(), *funnel.values(), window_end, provisional)

    def _pipeline_metrics(self, proc: Processor):
        c = proc.counters
        processed = CounterMetricFamily("livepulse_records_processed", "Input records consumed.", labels=["topic"])
        for topic, n in c.processed.items():
            processed.add_metric([topic], n)
        rejected = CounterMetricFamily(
            "livepulse_records_rejected", "Input records sent to the dead-letter topic.", labels=["reason"]
        )
        for reason, n in c.rejected.items():
            rejected.add_metric([reason], n)
        capped = CounterMetricFamily(
            "livepulse_records_capped", "Valid records rejected by a cap (also in rejected, reason cap_exceeded).",
            labels=["cap"],
        )
        for cap in sorted({*CAPS, *c.capped}):
            capped.add_metric([cap], c.capped.get(cap, 0))
        oversized = CounterMetricFamily(
            "livepulse_output_records_too_large",
            "Output records over LIVEPULSE_MAX_MESSAGE_BYTES: trimmed (summaries) or replaced by a dead letter.",
            labels=["topic"],
        )
        for topic, n in c.oversized.items():
            oversized.add_metric([topic], n)
        yield processed
        yield rejected
        yield capped
        yield oversized
        yield CounterMetricFamily("livepulse_events_abandoned", "Events dropped without an end after a long silence.",
                                  value=c.abandoned)
        yield CounterMetricFamily("livepulse_duplicates_dropped", "Duplicate interactions dropped.", value=c.duplicates)
        yield CounterMetricFamily("livepulse_redelivered_records",
                                  "Interactions skipped because the restored state already holds them (replay after "
                                  "a restart or rebalance).", value=c.redelivered)
        yield CounterMetricFamily("livepulse_records_deferred",
                                  "Records received while their partition was moving to or from this worker, left "
                                  "unprocessed and uncommitted to be read again once its state is restored.",
                                  value=c.deferred)
        yield CounterMetricFamily("livepulse_late_records", "Records beyond the allowed lateness.", value=c.late)
        yield CounterMetricFamily(
            "livepulse_records_rekeyed", "Valid records forwarded to their event's partition.", value=c.rekeyed
        )
        yield CounterMetricFamily(
            "livepulse_records_after_retention", "Records of events already expired, ignored.",
            value=c.after_retention,
        )
        lag = GaugeMetricFamily(
            "livepulse_event_time_lag_seconds", "Wall clock minus the event time of the newest record processed."
        )
        if c.newest_ts is not None:
            lag.add_metric([], max(0.0, time.time() - c.newest_ts / 1000))
        yield lag
        yield GaugeMetricFamily(
            "livepulse_open_sessions", "Attendees present in state, over owned events.",
            value=sum(ev.open_count for ev in proc.events.values()),
        )
        yield GaugeMetricFamily("livepulse_events_tracked", "Events held in state.", value=len(proc.events))
        if self.batch_sizes is not None:
            buckets = cumulative_buckets(BATCH_BUCKETS, self.batch_sizes.counts)
            yield HistogramMetricFamily("livepulse_batch_records", "Records per processed batch.", buckets=buckets,
                                        sum_value=self.batch_sizes.total)
        if self.consumer_lag is not None:
            consumer_lag = GaugeMetricFamily(
                "livepulse_consumer_lag_records",
                "Input records not yet processed on the partitions this worker owns (high watermark minus the next "
                "offset to process, as of the last batch of each partition).", labels=["topic"],
            )
            for topic, n in self.consumer_lag.by_topic().items():
                consumer_lag.add_metric([topic], n)
            yield consumer_lag
            last_read = GaugeMetricFamily(
                "livepulse_input_last_record_timestamp_seconds",
                "Wall time this worker last processed a record of the input topic (absent until it has).",
                labels=["topic"])
            for topic, wall in sorted(self.consumer_lag.last_read.items()):
                last_read.add_metric([topic], wall)
            yield last_read
            if self.consumer_lag.last_interaction is not None:
                yield GaugeMetricFamily(
                    "livepulse_input_last_interaction_timestamp_seconds",
                    "Wall time this worker last processed an interaction record (interactions or rekeyed topic).",
                    value=self.consumer_lag.last_interaction)
        if self.ownership is not None:
            yield GaugeMetricFamily("livepulse_partitions_owned", "Input partitions this worker owns (restored).",
                                    value=self.ownership.partitions)
            yield CounterMetricFamily("livepulse_rebalances",
                                      "Partition assignments this worker recovered from since it started (the first one included).",
                                      value=self.ownership.rebalances)
        if self.snapshots is not None:
            yield GaugeMetricFamily("livepulse_snapshot_round_seconds",
                                    "Time the last round of live snapshots took (grows with the attendees present).",
                                    value=self.snapshots.last_round_s)
            yield GaugeMetricFamily("livepulse_snapshot_interval_seconds",
                                    "Current spacing of live snapshot rounds: the configured interval, or longer when "
                                    "a round would otherwise take more than LIVEPULSE_SNAPSHOT_MAX_SHARE of the time.",
                                    value=self.snapshots.spacing_s)


CHANNEL_GAUGES = (
    ("livepulse_channel_registrations", "Registrations through the registration channel.", "registrations"),
    ("livepulse_channel_attendees", "Attendees ever present who came through the channel (walk_in: walk-ins).",
     "attendees"),
    ("livepulse_channel_avg_dwell_seconds", "Mean dwell of the channel's attendees.", "avg_dwell_seconds"),
    ("livepulse_channel_engagement_score", "Mean engagement score of the channel's attendees (0-100).",
     "engagement_score"),
    ("livepulse_channel_mqls", "The channel's marketing-qualified leads (grade A or B) so far.", "mqls"),
)
CHANNEL_COST_GAUGES = (
    ("livepulse_channel_cost_per_registration", "Channel cost / its registrations, in the event's currency.",
     "cost_per_registration"),
    ("livepulse_channel_cost_per_attendee", "Channel cost / its attendees, in the event's currency.",
     "cost_per_attendee"),
    ("livepulse_channel_cost_per_mql", "Channel cost / its MQLs, in the event's currency.", "cost_per_mql"),
)


def channel_metrics(proc: Processor):
    """Figures per registration channel of the latest snapshot or summary (docs/semantics.md "Figures per
    registration channel"); the `channel` label is bounded by LIVEPULSE_MAX_CHANNELS_PER_EVENT (+ walk_in, unknown,
    other)."""
    labels = ["event_id", "channel"]
    gauges = {name: GaugeMetricFamily(name, doc, labels=labels) for name, doc, _ in CHANNEL_GAUGES}
    ratio = GaugeMetricFamily("livepulse_channel_attendance_ratio",
                              "Registered attendees present / registrations, per registration channel.", labels=labels)
    grades = GaugeMetricFamily("livepulse_channel_leads", "The channel's leads by grade so far.",
                               labels=[*labels, "grade"])
    costs = {name: GaugeMetricFamily(name, doc, labels=[*labels, "currency"]) for name, doc, _ in CHANNEL_COST_GAUGES}
    for event_id, view in proc.views.items():
        if event_id not in proc.events:
            continue
        currency = view["currency"] or NO_CURRENCY
        for row in view["channels"]:
            ids = [event_id, row["channel"]]
            for name, _, field in CHANNEL_GAUGES:
                gauges[name].add_metric(ids, row[field])
            if row["attendance_rate"] is not None:
                ratio.add_metric(ids, row["attendance_rate"])
            for grade, n in row["leads_by_grade"].items():
                grades.add_metric([*ids, grade], n)
            for name, _, field in CHANNEL_COST_GAUGES:
                if row[field] is not None:
                    costs[name].add_metric([*ids, currency], row[field])
    yield from gauges.values()
    yield from (ratio, grades, *costs.values())


def worker_registry(collector: LivePulseCollector) -> CollectorRegistry:
    """The registry of a worker's /metrics: LivePulse's collector and prometheus_client's standard process
    (process_start_time_seconds, memory, CPU, open file descriptors), platform (python_info) and GC collectors --
    not the global default registry, which libraries may fill with anything."""
    # (collectors without names: ours describes nothing up front, so the ?name[] filter must still ask it)
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(collector)
    for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(standard)
    return registry


def exposition(processor: Processor, batch_sizes: BatchSizes | None = None,
               consumer_lag: ConsumerLag | None = None, snapshots: SnapshotPacing | None = None,
               ownership: Ownership | None = None, *, standard: bool = False) -> bytes:
    """The Prometheus text for /metrics (a fresh registry: our collector only, or with `standard` the worker's
    whole registry, see worker_registry)."""
    collector = LivePulseCollector(processor, batch_sizes, consumer_lag, snapshots, ownership)
    if standard:
        return generate_latest(worker_registry(collector))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
