"""LivePulse's Grafana dashboards, written with the grafana-foundation-sdk typed builders.

Run `python -m grafana.dashboards` from the repository root to (re)write grafana/dashboards/*.json, which Grafana
provisions as they are (grafana/provisioning/). The output is sorted, indented JSON with fixed uids and panel ids,
so regenerating is byte-identical and a change to a query shows up as a one-line diff.

Query rules (checked by tests/grafana, exercised against a real Prometheus by tests/e2e):
- during a rebalance two workers may export the same event, so event series (label `event_id`) are always
  reduced with `max by (event_id, ...)` over the workers, never summed; pipeline series are per worker and summed;
- the only Grafana variables are `$event_id`, `$organizer_id`, `$instance`, `$__rate_interval` and `$__range`;
  the job is written literally;
- money is shown per currency, with the currency's unit (currency_units);
- every query returns data once a webinar has been processed (no series that only exist in rare cases).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import barchart, bargauge, common, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import table as tables
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="livepulse-prometheus")
JOB = 'job="livepulse"'
EVENT = f'{JOB}, event_id="$event_id"'
# Marketing ROI: `$event_id` is multi-valued. Engagement-stage series carry only event_id; the ROI ledger's series
# (livepulse_roi_*) also carry organizer_id.
EVENTS = f'{JOB}, event_id=~"$event_id"'
ORGANIZER_EVENTS = f'{JOB}, organizer_id=~"$organizer_id", event_id=~"$event_id"'
WORKERS = f'{JOB}, instance=~"$instance"'
RATE = "[$__rate_interval]"
RANGE = "[$__range]"


# ----------------------------------------------------------------------------------------------------- queries
def per_event_max(series: str, by: str = "") -> str:
    """Event series reduced over the workers that export them (`max`, never `sum`: see the module doc), keeping
    event_id and the labels in `by`."""
    return f"max by (event_id{f', {by}' if by else ''}) ({series})"


def event(metric: str, by: str = "", selector: str = EVENT) -> str:
    """The selected event's series, reduced over the workers."""
    return per_event_max(f"{metric}{{{selector}}}", by)


def events(metric: str, by: str = "") -> str:
    """An engagement-stage series of the selected events (label event_id only, + `by`), as last seen within the
    dashboard's range: a worker drops an ended event's series LIVEPULSE_RETENTION_S (15 min) after its summary,
    while the ROI series (and so the event list) stay for the attribution window."""
    return per_event_max(f"last_over_time({metric}{{{EVENTS}}}{RANGE})", by)


def attributed(metric: str, by: str = "") -> str:
    """A ROI ledger series (livepulse_roi_*) of the selected organiser's selected events."""
    return event(metric, by, ORGANIZER_EVENTS)


def event_per_minute(types: str) -> str:
    """Interactions per minute by type: the rate per worker, then the max over workers."""
    return f'60 * max by (event_id, type) (rate(livepulse_interactions_total{{{EVENT}, type=~"{types}"}}{RATE}))'


def workers(metric: str, by: str = "", rate: bool = False) -> str:
    """A pipeline series (per worker, no event_id), summed over the selected workers, optionally as a rate."""
    series = f"{metric}{{{WORKERS}}}"
    if rate:
        series = f"rate({series}{RATE})"
    return f"sum{f' by ({by})' if by else ''} ({series})"


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False,
           fmt: pm.PromQueryFormat | None = None) -> prom.Dataquery:
    """A Prometheus query; `fmt` HEATMAP turns cumulative `le` buckets into per-bucket counts ordered by bound,
    TABLE gives one row per series with its labels as columns (for table transformations)."""
    query = prom.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DATASOURCE)
    if fmt is not None:
        query = query.format(fmt)
    return query.instant() if instant else query.range()


def targets(*pairs: tuple[str, str], instant: bool = False,
            fmt: pm.PromQueryFormat | None = None) -> list[prom.Dataquery]:
    return [target(expr, legend, chr(ord("A") + i), instant=instant, fmt=fmt) for i, (expr, legend) in enumerate(pairs)]


# ------------------------------------------------------------------------------------------------------ panels
def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return dash.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in steps])


GRADE_COLORS = {"A": "green", "B": "blue", "C": "orange", "D": "red"}
RATIO_STEPS = thresholds((None, "red"), (0.3, "orange"), (0.5, "green"))  # shares of an audience (0..1)
SCORE_STEPS = thresholds((None, "red"), (30, "orange"), (60, "green"))  # engagement score (0..100)


def stat_panel(title: str, description: str, queries: list[prom.Dataquery], unit: str = "short", *,
               width: int = 4, steps: dash.ThresholdsConfig | None = None, low: float | None = None,
               high: float | None = None) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).datasource(DATASOURCE).targets(queries)
             .unit(unit).height(5).span(width).graph_mode(cm.BigValueGraphMode.AREA)
             .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
             .thresholds(steps or thresholds((None, "blue"))))
    return bounded(panel, low, high)


def bounded(panel, low: float | None, high: float | None):
    """Fixed axis / gauge range for ratios and scores (so 0.3 does not look like a full bar)."""
    if low is not None:
        panel = panel.min(low)
    return panel.max(high) if high is not None else panel


def bar_panel(title: str, description: str, queries: list[prom.Dataquery], unit: str = "short", *,
              width: int = 12, steps: dash.ThresholdsConfig | None = None, low: float | None = None,
              high: float | None = None) -> bargauge.Panel:
    """Horizontal bars, one per series (last value): bucket counts, or one figure per event."""
    panel = (bargauge.Panel().title(title).description(description).datasource(DATASOURCE).targets(queries)
             .unit(unit).height(8).span(width)
             .display_mode(cm.BarGaugeDisplayMode.GRADIENT).orientation(cm.VizOrientation.HORIZONTAL)
             .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
             .thresholds(steps or thresholds((None, "blue"))))
    return bounded(panel, low, high)


def series_panel(title: str, description: str, queries: list[prom.Dataquery], unit: str = "short", *,
                 low: float | None = None, high: float | None = None) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE).targets(queries)
             .unit(unit).height(8).span(12).fill_opacity(10).line_width(2)
             .legend(common.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.LIST)
                     .placement(cm.LegendPlacement.BOTTOM)))
    return bounded(panel, low, high)


class _PrometheusAnnotation(dm.AnnotationQuery):
    """The SDK's AnnotationQuery lacks the Prometheus options, which Grafana's Prometheus datasource reads from
    the annotation itself: with `useValueForTime` the sample VALUE (in milliseconds) is the annotation's time."""

    def __init__(self, name: str, expr: str, title: str, color: str, *, value_is_time: bool = True,
                 tags: str = "event_id") -> None:
        super().__init__(name=name, datasource=DATASOURCE, enable=True, icon_color=color, expr=expr)
        self.title_format = title
        self.value_is_time = value_is_time
        self.tags = tags

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "useValueForTime": self.value_is_time, "titleFormat": self.title_format,
                "tagKeys": self.tags, "step": "60s" if self.value_is_time else "15s"}


class _Built(cogbuilder.Builder[dm.AnnotationQuery]):
    """Hands an already built model to a builder method that expects a builder."""

    def __init__(self, model: dm.AnnotationQuery) -> None:
        self.model = model

    def build(self) -> dm.AnnotationQuery:
        return self.model


def event_time_annotation(name: str, metric: str, title: str, color: str) -> _Built:
    """A marker at the event's start or end (event time): the gauge holds seconds, Grafana wants milliseconds."""
    return _Built(_PrometheusAnnotation(name, f"{event(metric)} * 1000", title, color))


def alerts_annotation() -> _Built:
    """A region while an alert of the selected event fires (and while the input is stalled, which explains every
    event's gaps): ALERTS exists as long as the alert is firing."""
    expr = ('ALERTS{alertstate="firing", event_id="$event_id"} '
            'or ALERTS{alertstate="firing", alertname="LivePulseInputStalled"}')
    return _Built(_PrometheusAnnotation("Firing alerts", expr, "{{alertname}}", "orange", value_is_time=False,
                                        tags="alertname,severity"))


# Money panels: an override per currency gives "{{event_id}} ({{currency}})" series that currency's unit.
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "JPY", "CAD", "AUD", "SEK", "NOK", "DKK", "PLN", "INR", "BRL", "CNY")


def currency_units(panel):
    """Unit `currencyXXX` on every series or column whose display name ends in "(XXX)" (the legend of money
    series; Grafana knows these currency units), so amounts read as "€8.00K", not a bare 8000."""
    for code in CURRENCIES:
        panel = panel.override_by_regexp(rf".*\({code}\)$", [dm.DynamicConfigValue(id_val="unit",
                                                                                  value=f"currency{code}")])
    return panel


def linked(builder: dash.Dashboard) -> dash.Dashboard:
    """Links to the other LivePulse dashboards (by tag), keeping the time range and the selected event."""
    return builder.link(dash.DashboardLink("LivePulse dashboards").type(dm.DashboardLinkType.DASHBOARDS)
                        .tags(["livepulse"]).as_dropdown(False).include_vars(True).keep_time(True))


def finish(builder: dash.Dashboard) -> dict:
    """The dashboard as JSON data, with panel ids numbered in order (stable links, stable diffs)."""
    model = builder.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return json.loads(json.dumps(model, cls=JSONEncoder))


def base(uid: str, title: str, description: str) -> dash.Dashboard:
    return linked(dash.Dashboard(title).uid(uid).description(description).tags(["livepulse"]).readonly()
                  .time("now-1h", "now").refresh("10s").timezone("browser").tooltip(dm.DashboardCursorSync.CROSSHAIR))


# The Live dashboard's event picker: the selected organiser's events, the fullest room first (Grafana selects the
# first option when none is saved: a live event). The regex takes the event id out of each result line.
LIVE_EVENTS = ('query_result(sort_desc(max by (event_id) (livepulse_attendees_current{job="livepulse"}) '
               '* on (event_id) group_left () '
               'max by (event_id) (livepulse_event_info{job="livepulse", organizer_id=~"$organizer_id"})))')


# -------------------------------------------------------------------------------------------------- dashboards
def live_event() -> dict:
    """One webinar as it happens: audience, drop-off, engagement, sessions; start/end markers."""
    window_max = f"max by (event_id) (max_over_time(livepulse_attendees_current{{{EVENT}}}[10m]))"
    ratio = ("percentunit", RATIO_STEPS)
    score = SCORE_STEPS
    drop_line = thresholds((None, "transparent"), (0.25, "red"))  # the drop-off alert's DROP_RATIO
    builder = (
        base("livepulse-live-event", "LivePulse / Live event",
             "One live webinar, per event_id. Event series are reduced with max by (event_id) over the workers "
             "(two may briefly export the same event during a rebalance). Generated by grafana/dashboards.py.")
        .time("now-2h", "now")  # a 90-minute webinar with its lobby and wind-down
        .with_variable(dash.QueryVariable("organizer_id").label("Organiser").datasource(DATASOURCE)
                       .query('label_values(livepulse_event_info{job="livepulse"}, organizer_id)').include_all(True)
                       .all_value(".*").current(dm.VariableOption(selected=True, text="All", value="$__all"))
                       .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
        .with_variable(dash.QueryVariable("event_id").label("Event").datasource(DATASOURCE)
                       .query(LIVE_EVENTS).regex('/event_id="([^"]+)"/')
                       .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.DISABLED))
        .annotation(event_time_annotation("Scheduled start", "livepulse_event_scheduled_start_timestamp_seconds",
                                          "Scheduled start", "blue"))
        .annotation(event_time_annotation("Scheduled end", "livepulse_event_scheduled_end_timestamp_seconds",
                                          "Scheduled end", "purple"))
        .annotation(event_time_annotation("Event start", "livepulse_event_start_timestamp_seconds",
                                          "Event started", "green"))
        .annotation(event_time_annotation("Event end", "livepulse_event_end_timestamp_seconds",
                                          "Event ended", "red"))
        .annotation(alerts_annotation())
        .with_row(dash.Row("Right now"))
        .with_panel(stat_panel("Data delay", "How far these figures are behind: wall clock minus the newest event "
                               "time of the event's records (0 once its final summary is out). It grows when the "
                               "input stalls: the figures are then late, not the audience gone (alert "
                               "LivePulseInputStalled).",
                               [target(event("livepulse_event_data_delay_seconds"))], "s",
                               steps=thresholds((None, "green"), (30, "orange"), (120, "red"))))
        .with_panel(stat_panel("Attendees now", "In the room at the event clock.",
                               [target(event("livepulse_attendees_current"))]))
        .with_panel(stat_panel("Peak attendees", "Most attendees in the room at once so far.",
                               [target(event("livepulse_attendees_peak"))]))
        .with_panel(stat_panel("Attendance rate", "Registered attendees who were present / registrations.",
                               [target(event("livepulse_attendance_ratio"))], ratio[0], steps=ratio[1]))
        .with_panel(stat_panel("Unique attendees vs registrations",
                               "Distinct attendees ever present, and distinct registrants.",
                               targets((event("livepulse_unique_attendees"), "unique attendees"),
                                       (event("livepulse_registrations"), "registrations")), width=6))
        .with_panel(stat_panel("Engagement score", "Mean engagement score of the unique attendees (0-100).",
                               [target(event("livepulse_engagement_score"))], "none", width=6, steps=score,
                               low=0, high=100))
        .with_panel(stat_panel("Average dwell", "Dwell of all sessions, the open ones included up to the last "
                               "snapshot / unique attendees.",
                               [target(f'{event("livepulse_dwell_including_open_seconds")} / '
                                       f'{event("livepulse_unique_attendees")}')], "s"))
        .with_panel(stat_panel("Median session", "Median length of completed presence sessions (from buckets).",
                               [target('histogram_quantile(0.5, max by (event_id, le) '
                                       f'(livepulse_session_duration_seconds_bucket{{{EVENT}}}))')], "s"))
        .with_panel(stat_panel("Poll participation", "Attendees who voted in a poll / unique attendees.",
                               [target(f'{event("livepulse_poll_voters")} / {event("livepulse_unique_attendees")}')],
                               ratio[0], steps=ratio[1]))
        .with_panel(stat_panel("CTA clickers", "Distinct attendees who clicked a call to action.",
                               [target(event("livepulse_cta_clickers"))]))
        .with_panel(stat_panel("Key-account attendees", "Unique attendees from the event's key accounts.",
                               [target(event("livepulse_key_account_attendees"))]))
        .with_panel(stat_panel("Walk-ins", "Present attendees who never registered.",
                               [target(event("livepulse_walk_ins"))]))
        .with_row(dash.Row("Audience"))
        .with_panel(series_panel("Audience curve", "Attendees in the room over time, with the peak so far.",
                                 targets((event("livepulse_attendees_current"), "in the room"),
                                         (event("livepulse_attendees_peak"), "peak"),
                                         (event("livepulse_unique_attendees"), "unique so far"))))
        .with_panel(series_panel("Joins and leaves per minute",
                                 "Join and explicit leave interactions, and sessions that ended: explicit leaves "
                                 "plus idle timeouts (attendees whose client went silent).",
                                 [target(event_per_minute("join|leave"), "{{type}}"),
                                  target("60 * max by (event_id) (rate(livepulse_session_duration_seconds_count"
                                         f"{{{EVENT}}}{RATE}))", "left (incl. idle timeouts)", ref="B")], "cpm"))
        .with_panel(series_panel("Drop-off", "Share of the audience lost relative to its maximum over the last "
                                 "10 minutes; the line is the drop-off alert's 25 % (it also needs 10 people lost "
                                 "of a room of at least 20); 0 while the room has been empty.",
                                 [target(f"({window_max} - {event('livepulse_attendees_current')}) / "
                                         f"clamp_min({window_max}, 1)",
                                         "drop-off vs 10 min max")], "percentunit", low=0, high=1)
                    .thresholds(drop_line)
                    .thresholds_style(common.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)))
        .with_panel(bar_panel("Session durations",
                              "Completed presence sessions per duration bucket (upper bound, seconds).",
                              [target(event("livepulse_session_duration_seconds_bucket", "le"), "<= {{le}} s",
                                      instant=True, fmt=pm.PromQueryFormat.HEATMAP)]))
        .with_row(dash.Row("Engagement"))
        .with_panel(series_panel("Interactions per minute by type", "De-duplicated interactions of the room.",
                                 [target(event_per_minute("chat|question|poll_vote|reaction|cta_click"),
                                         "{{type}}")], "cpm"))
        .with_panel(series_panel("Engagement score", "Mean engagement score of the unique attendees (0-100).",
                                 [target(event("livepulse_engagement_score"), "score")], "none", low=0, high=100))
        .with_panel(series_panel("Poll and CTA participation",
                                 "Poll voters and CTA clickers / unique attendees.",
                                 targets((f'{event("livepulse_poll_voters")} / {event("livepulse_unique_attendees")}',
                                          "voted in a poll"),
                                         (f'{event("livepulse_cta_clickers")} / {event("livepulse_unique_attendees")}',
                                          "clicked a CTA")), "percentunit", low=0, high=1))
        .with_panel(series_panel("Key accounts and walk-ins", "Unique key-account attendees; walk-ins.",
                                 targets((event("livepulse_key_account_attendees"), "key-account attendees"),
                                         (event("livepulse_walk_ins"), "walk-ins"))))
    )
    return finish(builder)


def pipeline_health() -> dict:
    """The workers: throughput, rejects and record anomalies, lags, state size, batch sizes, per worker."""
    down = thresholds((None, "red"), (1, "green"))
    batch = f"livepulse_batch_records_bucket{{{WORKERS}}}"
    # Idle-aware lag: a worker's event-time lag while it is reading interactions; 0 while it is idle (between
    # events the newest record only gets older, which is not lateness): busy = read interactions in the last 2 min.
    busy = f"time() - max by (instance) (livepulse_input_last_interaction_timestamp_seconds{{{WORKERS}}}) < 120"
    lag = f"max by (instance) (livepulse_event_time_lag_seconds{{{WORKERS}}})"
    idle_aware_lag = f"({lag} and on (instance) ({busy})) or on (instance) (0 * {lag})"
    process = f"{WORKERS}"
    mean_batch = (f'{workers("livepulse_batch_records_sum", rate=True)} / '
                  f'{workers("livepulse_batch_records_count", rate=True)}')
    builder = (
        base("livepulse-pipeline-health", "LivePulse / Pipeline health",
             "The LivePulse workers (job=\"livepulse\"). Pipeline series are per worker and summed over the "
             "selected workers. Generated by grafana/dashboards.py.")
        .with_variable(dash.QueryVariable("instance").label("Worker").datasource(DATASOURCE)
                       .query('label_values(up{job="livepulse"}, instance)').multi(True).include_all(True)
                       .all_value(".*")
                       .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
                       .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
                       .sort(dm.VariableSort.ALPHABETICAL_ASC))
        .with_row(dash.Row("Overview"))
        .with_panel(stat_panel("Workers up", "Workers Prometheus scraped successfully, of the targets it has.",
                               targets((f"sum (up{{{WORKERS}}})", "up"), (f"count (up{{{WORKERS}}})", "of")),
                               steps=down).text_mode(cm.BigValueTextMode.VALUE_AND_NAME))
        .with_panel(stat_panel("Records per second", "Input records read, all topics.",
                               [target(workers("livepulse_records_processed_total", rate=True))], "recps"))
        .with_panel(stat_panel("Rejected per second", "Records sent to the dead-letter topic.",
                               [target(workers("livepulse_records_rejected_total", rate=True))], "recps",
                               steps=thresholds((None, "green"), (0.001, "orange"))))
        .with_panel(stat_panel("Events tracked", "Events held in state.",
                               [target(workers("livepulse_events_tracked"))]))
        .with_panel(stat_panel("Open sessions", "Present attendees held in state.",
                               [target(workers("livepulse_open_sessions"))]))
        .with_panel(stat_panel("Event-time lag", "Wall clock minus the newest record's ts, worst worker, counted only "
                               "while it reads interactions (0 when idle: between events nothing is late).",
                               [target(f"max ({idle_aware_lag})")], "s",
                               steps=thresholds((None, "green"), (30, "orange"), (120, "red"))))
        .with_row(dash.Row("Records"))
        .with_panel(series_panel("Records processed by topic", "Input records read per second.",
                                 [target(workers("livepulse_records_processed_total", "topic", rate=True),
                                         "{{topic}}")], "recps"))
        .with_panel(series_panel("Rejected by reason", "Records sent to the DLQ per second, by reason code.",
                                 [target(workers("livepulse_records_rejected_total", "reason", rate=True),
                                         "{{reason}}")], "recps"))
        .with_panel(series_panel("Duplicates and redeliveries",
                                 "Interactions dropped as duplicates; interactions skipped on replay because the "
                                 "restored state already holds them.",
                                 targets((workers("livepulse_duplicates_dropped_total", rate=True), "duplicates"),
                                         (workers("livepulse_redelivered_records_total", rate=True), "redelivered")),
                                 "recps"))
        .with_panel(series_panel("Late, rekeyed, after retention",
                                 "Records beyond the allowed lateness; forwarded to their event's partition; for "
                                 "events already expired.",
                                 targets((workers("livepulse_late_records_total", rate=True), "late"),
                                         (workers("livepulse_records_rekeyed_total", rate=True), "rekeyed"),
                                         (workers("livepulse_records_after_retention_total", rate=True),
                                          "after retention")), "recps"))
        .with_panel(series_panel("Batch sizes", "Records per processed batch (median, p99, mean).",
                                 targets((f"histogram_quantile(0.5, sum by (le) (rate({batch}{RATE})))", "p50"),
                                         (f"histogram_quantile(0.99, sum by (le) (rate({batch}{RATE})))", "p99"),
                                         (mean_batch, "mean"))))
        .with_panel(series_panel("Event-time lag", "Wall clock minus the newest record's ts, per worker.",
                                 [target(f"max by (instance) (livepulse_event_time_lag_seconds{{{WORKERS}}})",
                                         "{{instance}}")], "s"))
        .with_row(dash.Row("Per worker"))
        .with_panel(series_panel("Worker up", "1 when Prometheus scraped the worker.",
                                 [target(f"up{{{WORKERS}}}", "{{instance}}")], "none", low=0, high=1))
        .with_panel(series_panel("Records per second by worker", "Input records read per second.",
                                 [target(workers("livepulse_records_processed_total", "instance", rate=True),
                                         "{{instance}}")], "recps"))
        .with_panel(series_panel("Events tracked by worker", "Events held in each worker's state.",
                                 [target(workers("livepulse_events_tracked", "instance"), "{{instance}}")]))
        .with_panel(series_panel("Open sessions by worker", "Present attendees held in each worker's state.",
                                 [target(workers("livepulse_open_sessions", "instance"), "{{instance}}")]))
        # Last, so the panels above keep their ids (links).
        .with_row(dash.Row("Consumer lag"))
        .with_panel(series_panel("Consumer lag by topic",
                                 "Input records waiting to be processed (high watermark minus the next offset to "
                                 "process, as of each partition's last batch), summed over the workers. Rising or "
                                 "flat while records arrive: the workers are slower than their input "
                                 "(alert LivePulseConsumerNotCatchingUp).",
                                 [target(workers("livepulse_consumer_lag_records", "topic"), "{{topic}}")],
                                 low=0))
        .with_panel(series_panel("Consumer lag by worker",
                                 "Input records waiting on the partitions each worker owns, all input topics: one "
                                 "worker behind while the others keep up is a hot partition or a slow host.",
                                 [target(workers("livepulse_consumer_lag_records", "instance"), "{{instance}}")],
                                 low=0))
        .with_panel(series_panel("Live snapshot rounds",
                                 "Per worker: how long a round of live snapshots takes (it walks every present "
                                 "attendee) and how far apart rounds are. The spacing grows past the configured "
                                 "interval when rounds would take more than LIVEPULSE_SNAPSHOT_MAX_SHARE of the "
                                 "worker's time: live figures of huge audiences then refresh less often.",
                                 [target(workers("livepulse_snapshot_round_seconds", "instance"),
                                         "round {{instance}}"),
                                  target(workers("livepulse_snapshot_interval_seconds", "instance"),
                                         "spacing {{instance}}", ref="B")],
                                 unit="s", low=0))
        .with_row(dash.Row("Input"))
        .with_panel(series_panel("Input silence", "Seconds since the workers last processed a record, per input "
                                 "topic (the most recent over the selected workers). Interactions silent for a "
                                 "minute while events are live: alert LivePulseInputStalled.",
                                 [target("time() - max by (topic) (livepulse_input_last_record_timestamp_seconds"
                                         f"{{{WORKERS}}})", "{{topic}}")], "s", low=0))
        .with_panel(series_panel("Idle-aware event-time lag", "Per worker, while it reads interactions; 0 when idle.",
                                 [target(idle_aware_lag, "{{instance}}")], "s", low=0))
        .with_panel(series_panel("Deferred, capped, abandoned",
                                 "Records deferred while their partition moved (read again later); valid records "
                                 "rejected by a cap, by cap; events dropped without an end after a long silence.",
                                 [target(workers("livepulse_records_deferred_total", rate=True), "deferred"),
                                  target(workers("livepulse_records_capped_total", "cap", rate=True),
                                         "capped {{cap}}", ref="B"),
                                  target(workers("livepulse_events_abandoned_total", rate=True), "abandoned",
                                         ref="C")], "recps", low=0))
        .with_row(dash.Row("Partitions and rebalances"))
        .with_panel(series_panel("Partitions owned", "Input partitions each worker owns (restored and processing).",
                                 [target(workers("livepulse_partitions_owned", "instance"), "{{instance}}")],
                                 low=0))
        .with_panel(series_panel("Rebalances", "Rebalances each worker recovered from, per hour (each one pauses "
                                 "the live figures of the partitions that move).",
                                 [target(f"3600 * {workers('livepulse_rebalances_total', 'instance', rate=True)}",
                                         "{{instance}}")], low=0))
        .with_row(dash.Row("Processes (standard process collector)"))
        .with_panel(series_panel("Restarts", "Process starts per worker within the last 15 minutes (changes of "
                                 "process_start_time_seconds; 2 or more: alert LivePulseWorkerCrashLooping).",
                                 [target(f"changes(process_start_time_seconds{{{process}}}[15m])", "{{instance}}")],
                                 low=0))
        .with_panel(series_panel("Resident memory", "Resident set size per worker.",
                                 [target(f"process_resident_memory_bytes{{{process}}}", "{{instance}}")], "bytes",
                                 low=0))
        .with_panel(series_panel("CPU", "CPU time per second of wall time per worker (1 = one core).",
                                 [target(f"rate(process_cpu_seconds_total{{{process}}}{RATE})", "{{instance}}")],
                                 "percentunit", low=0))
        .with_panel(series_panel("Open file descriptors", "Open file descriptors per worker, against its limit.",
                                 [target(f"process_open_fds{{{process}}}", "open {{instance}}"),
                                  target(f"process_max_fds{{{process}}}", "limit {{instance}}", ref="B")], low=0))
        .with_row(dash.Row("Scrapes"))
        .with_panel(series_panel("Scrape duration", "How long Prometheus takes to scrape each worker's /metrics.",
                                 [target(f"scrape_duration_seconds{{{WORKERS}}}", "{{instance}}")], "s", low=0))
        .with_panel(series_panel("Samples per scrape", "Samples in each worker's /metrics (grows with the events "
                                 "it holds).",
                                 [target(f"scrape_samples_scraped{{{WORKERS}}}", "{{instance}}")], low=0))
    )
    return finish(builder)


def per_event(title: str, description: str, *pairs: tuple[str, str], unit: str = "short", width: int = 6,
              steps: dash.ThresholdsConfig | None = None, low: float | None = None,
              high: float | None = None, money: bool = False) -> bargauge.Panel:
    """One bar per selected event (and per currency, where the series has one): the figure now (instant)."""
    panel = bar_panel(title, description, targets(*pairs, instant=True), unit, width=width, steps=steps, low=low,
                      high=high)
    return currency_units(panel) if money else panel


def final_roi() -> str:
    """The final ROI (recording rule event_id_organizer_id:livepulse_roi_ratio:final, deploy/prometheus/rules):
    set once the attribution window has closed and kept after the ROI ledger forgets the event; last_over_time
    bridges a Prometheus outage longer than the rule's own 1h lookback (within the TSDB retention)."""
    series = 'event_id_organizer_id:livepulse_roi_ratio:final{organizer_id=~"$organizer_id", event_id=~"$event_id"}'
    return f"max by (event_id, organizer_id) (last_over_time({series}{RANGE}))"


def provisional(expr: str) -> str:
    """`expr` only for the events whose attribution window is still open."""
    return f"{expr} and on (event_id, organizer_id) ({attributed('livepulse_roi_provisional')} == 1)"


def comparison_table(title: str, description: str, columns: list[tuple[str, str, str]]) -> tables.Panel:
    """One row per event_id: instant queries in table format (one row per series, labels as columns), merged
    on their common labels (event_id, and currency where two queries both have it), then renamed and ordered.
    `columns` are (column title, expression, unit)."""
    rename = {f"Value #{chr(ord('A') + i)}": name for i, (name, _, _) in enumerate(columns)}
    labels = ["event_id", "organizer_id", "currency"]
    panel = (tables.Panel().title(title).description(description).datasource(DATASOURCE).height(10).span(24)
             .targets(targets(*((expr, "") for _, expr, _ in columns), instant=True, fmt=pm.PromQueryFormat.TABLE))
             .transformations([
                 dm.DataTransformerConfig(id_val="merge", options={}),
                 dm.DataTransformerConfig(id_val="organize", options={
                     "excludeByName": {"Time": True},
                     "indexByName": {name: i for i, name in enumerate(labels + list(rename))},
                     "renameByName": {"event_id": "Event", "organizer_id": "Organiser", "currency": "Currency",
                                      **rename},
                 }),
             ])
             .sort_by([common.TableSortByFieldState().display_name(columns[-1][0]).desc(True)])
             .decimals(2).thresholds(thresholds((None, "text"))))
    return overridden(panel, {name: {"unit": unit} for name, _, unit in columns})


def grade_bars(title: str, description: str, expr: str) -> barchart.Panel:
    """A stacked bar per event, one segment per grade: the instant `expr` (labels event_id, grade) as a table,
    turned into one row per event and one column per grade."""
    panel = (barchart.Panel().title(title).description(description).datasource(DATASOURCE).height(8).span(24)
             .unit("short").targets([target(expr, instant=True, fmt=pm.PromQueryFormat.TABLE)])
             .with_transformation(dm.DataTransformerConfig(id_val="groupingToMatrix", options={
                 "columnField": "grade", "rowField": "event_id", "valueField": "Value"}))
             .stacking(cm.StackingMode.NORMAL).show_value(cm.VisibilityMode.AUTO)
             .orientation(cm.VizOrientation.HORIZONTAL).fill_opacity(80)
             .legend(common.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.LIST)
                     .placement(cm.LegendPlacement.BOTTOM)))
    return overridden(panel, {grade: {"color": {"mode": "fixed", "fixedColor": color}}
                              for grade, color in GRADE_COLORS.items()})


def overridden(panel, by_name: dict[str, dict[str, object]]):
    """Field overrides by (display) name: {field: {property id: value}}."""
    for name, properties in by_name.items():
        panel = panel.override_by_name(name, [dm.DynamicConfigValue(id_val=k, value=v) for k, v in properties.items()])
    return panel


def marketing_roi() -> dict:
    """What the webinars brought in: audience and cost, leads, key accounts, attributed pipeline and revenue, ROI."""
    money = "{{event_id}} ({{currency}})"
    roi = thresholds((None, "red"), (0, "green"))
    open_window = thresholds((None, "blue"))  # a provisional ROI is not a loss: no red
    builder = (
        base("livepulse-marketing-roi", "LivePulse / Marketing ROI",
             "Marketing figures of the selected events of one organiser, and the CRM opportunities and revenue "
             "attributed to them (livepulse_roi_*: once an event has ended). Audience, cost and lead figures are "
             "shown as last seen in the time range (workers drop an ended event's series after its retention). "
             "Per-event series are reduced with "
             "max by (event_id, ...) over the workers (two may briefly export the same event during a rebalance); "
             "amounts are per currency, never summed across currencies. Generated by grafana/dashboards.py.")
        .time("now-7d", "now").refresh("1m")
        .with_variable(dash.QueryVariable("organizer_id").label("Organiser").datasource(DATASOURCE)
                       .query("label_values(livepulse_roi_new_leads, organizer_id)").include_all(True)
                       .all_value(".*").current(dm.VariableOption(selected=True, text="All", value="$__all"))
                       .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
        # No custom "All" value: All must expand to the organiser's events, because the engagement-stage series
        # (attendance, cost per registration, leads...) have no organizer_id label to filter on.
        .with_variable(dash.QueryVariable("event_id").label("Event").datasource(DATASOURCE)
                       .query('label_values(livepulse_roi_new_leads{organizer_id=~"$organizer_id"}, event_id)')
                       .multi(True).include_all(True)
                       .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
                       .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
        .with_row(dash.Row("Audience and cost per event"))
        .with_panel(per_event("Attendance rate", "Registered attendees who were present / registrations.",
                              (events("livepulse_attendance_ratio"), "{{event_id}}"), unit="percentunit",
                              steps=RATIO_STEPS, low=0, high=1))
        .with_panel(per_event("Engagement score", "Mean engagement score of the unique attendees (0-100).",
                              (events("livepulse_engagement_score"), "{{event_id}}"), unit="none",
                              steps=SCORE_STEPS, low=0, high=100))
        .with_panel(per_event("Cost per registration", "Event cost / distinct registrants, in the cost's currency.",
                              (events("livepulse_cost_per_registration", "currency"), money), money=True))
        .with_panel(per_event("Cost per attendee", "Event cost / unique attendees, in the cost's currency.",
                              (events("livepulse_cost_per_attendee", "currency"), money), money=True))
        .with_row(dash.Row("Leads per event"))
        .with_panel(per_event("New leads", "People whose first event of this organiser is this one.",
                              (attributed("livepulse_roi_new_leads"), "{{event_id}}")))
        .with_panel(per_event("Marketing-qualified leads", "Leads of grade A or B.",
                              (events("livepulse_mqls"), "{{event_id}}")))
        .with_panel(per_event("Cost per new lead", "Event cost / new leads, in the cost's currency.",
                              (attributed("livepulse_roi_cost_per_new_lead", "currency"), money), money=True))
        .with_panel(per_event("Key accounts", "Share of the unique attendees from key accounts; share of the "
                              "event's key accounts that attended (coverage).",
                              (events("livepulse_key_account_share"), "{{event_id}} share"),
                              (events("livepulse_key_account_coverage"), "{{event_id}} coverage"),
                              unit="percentunit", low=0, high=1))
        .with_panel(grade_bars("Leads by grade", "Leads per engagement grade (A best; no-shows are D), stacked "
                               "per event.", events("livepulse_leads", "grade")))
        .with_row(dash.Row("Opportunities and revenue per event"))
        .with_panel(per_event("Opportunities attributed", "CRM opportunities created within the attribution "
                              "window after the event by its attendees or their accounts (shares when split).",
                              (attributed("livepulse_roi_opportunities"), "{{event_id}}")))
        .with_panel(per_event("Pipeline", "Amount of the attributed opportunities not lost, per currency.",
                              (attributed("livepulse_roi_pipeline_amount", "currency"), money), money=True))
        .with_panel(per_event("Won", "Amount of the attributed opportunities won within the window, per currency.",
                              (attributed("livepulse_roi_won_amount", "currency"), money), money=True))
        .with_panel(per_event("ROI (provisional)", "(Won in the cost's currency - cost) / cost SO FAR, for the events "
                              "whose attribution window is still open (until the date in \"Provisional until\"): "
                              "opportunities keep arriving, so a low figure is not a loss yet.",
                              (provisional(attributed("livepulse_roi_ratio")), "{{event_id}}"), unit="percentunit",
                              steps=open_window, low=-1))
        .with_panel(stat_panel("Provisional until", "When the attribution window of each event with a provisional "
                               "ROI closes (its widest window: key accounts' included).",
                               [target(provisional(f"{attributed('livepulse_roi_attribution_end_timestamp_seconds')}"
                                                   " * 1000"), "{{event_id}}", instant=True)],
                               "dateTimeAsIso", width=6).text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
                    .graph_mode(cm.BigValueGraphMode.NONE))
        .with_panel(per_event("Final ROI", "(Won - cost) / cost once the attribution window has closed; kept after "
                              "the ROI ledger forgets the event (recording rule "
                              "event_id_organizer_id:livepulse_roi_ratio:final).",
                              (final_roi(), "{{event_id}}"), unit="percentunit", steps=roi, low=-1))
        .with_row(dash.Row("Funnel and cost per event"))
        .with_panel(per_event("Cost", "Event cost, in its currency.",
                              (attributed("livepulse_roi_cost", "currency"), money), money=True))
        .with_panel(per_event("Funnel", "Registrations, unique attendees, marketing-qualified leads, new leads and "
                              "attributed opportunities (then Pipeline and Won, in money) -- the ROI ledger's "
                              "figures, kept for the attribution window.",
                              (attributed("livepulse_roi_registrations"), "{{event_id}} registrations"),
                              (attributed("livepulse_roi_attendees"), "{{event_id}} attendees"),
                              (attributed("livepulse_roi_mqls"), "{{event_id}} MQLs"),
                              (attributed("livepulse_roi_new_leads"), "{{event_id}} new leads"),
                              (attributed("livepulse_roi_opportunities"), "{{event_id}} opportunities"),
                              width=18))
        .with_row(dash.Row("Comparison"))
        .with_panel(comparison_table(
            "Recent events", "One row per event (another row for amounts in a second currency).",
            [("Attendance rate", events("livepulse_attendance_ratio"), "percentunit"),
             ("Engagement", events("livepulse_engagement_score"), "none"),
             ("Cost per new lead", attributed("livepulse_roi_cost_per_new_lead", "currency"), "none"),
             ("Pipeline", attributed("livepulse_roi_pipeline_amount", "currency"), "none"),
             ("Won", attributed("livepulse_roi_won_amount", "currency"), "none"),
             ("ROI so far", attributed("livepulse_roi_ratio", "organizer_id"), "percentunit")]))
    )
    return finish(builder)


DASHBOARDS = {"livepulse-live-event.json": live_event, "livepulse-pipeline-health.json": pipeline_health,
              "livepulse-marketing-roi.json": marketing_roi}


def render(data: dict) -> str:
    """Sorted, indented, newline-terminated: byte-identical on every run, readable in diffs."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


# ------------------------------------------------------------------------------------------------ all_queries
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\(\s*(.+)\s*\)\s*$", re.DOTALL)


def variable_promql(query: str) -> str:
    """The PromQL a Prometheus query variable evaluates: `label_values(sel, l)` has options exactly when
    `count by (l) (sel)` has results; `query_result(q)` runs `q`."""
    if m := _LABEL_VALUES.match(query):
        return f"count by ({m.group(2)}) ({m.group(1)})"
    if m := _QUERY_RESULT.match(query):
        return m.group(1)
    raise ValueError(f"unsupported variable query: {query!r}")


def all_queries(dashboard_json: dict) -> list[tuple[str, str]]:
    """(title, PromQL) of every query in a dashboard's JSON: panel targets (rows included, titled by panel),
    annotations ("annotation: NAME") and query variables ("variable: NAME", as PromQL, see variable_promql)."""
    found: list[tuple[str, str]] = []
    panels = list(dashboard_json.get("panels") or [])
    while panels:
        panel = panels.pop(0)
        panels[:0] = panel.get("panels") or []
        found += [(panel.get("title", ""), t["expr"]) for t in panel.get("targets") or [] if t.get("expr")]
    for anno in (dashboard_json.get("annotations") or {}).get("list") or []:
        expr = (anno.get("target") or {}).get("expr") or anno.get("expr")
        if expr:
            found.append((f"annotation: {anno.get('name', '')}", expr))
    for var in (dashboard_json.get("templating") or {}).get("list") or []:
        if var.get("type") == "query":
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            if query:
                found.append((f"variable: {var['name']}", variable_promql(query)))
    return found


def main(argv: list[str]) -> int:
    """Write every dashboard; with --check, only report (exit 1) which committed files are stale."""
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        path, text = OUT / name, render(build())
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not check:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = "stale" if check else "written"
    print(f"{verb}: {', '.join(stale)}" if stale else "dashboards up to date")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
