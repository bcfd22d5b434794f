"""LivePulse's Grafana dashboards, written with the grafana-foundation-sdk typed builders.

Run `python -m grafana.dashboards` from the repository root to (re)write grafana/dashboards/*.json, which Grafana
provisions as they are (grafana/provisioning/). The output is sorted, indented JSON with fixed uids and panel ids,
so regenerating is byte-identical and a change to a query shows up as a one-line diff.

Query rules (checked by tests/grafana, exercised against a real Prometheus by tests/e2e):
- during a rebalance two workers may export the same event, so event series (label `event_id`) are always
  reduced with `max by (event_id, ...)` over the workers, never summed; pipeline series are per worker and summed;
- the only Grafana variables are `$event_id`, `$instance` and `$__rate_interval`; the job is written literally;
- every query returns data once a webinar has been processed (no series that only exist in rare cases).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, common, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="livepulse-prometheus")
JOB = 'job="livepulse"'
EVENT = f'{JOB}, event_id="$event_id"'
WORKERS = f'{JOB}, instance=~"$instance"'
RATE = "[$__rate_interval]"


# ----------------------------------------------------------------------------------------------------- queries
def event(metric: str) -> str:
    """One event's series, reduced over the workers that export it (`max`, never `sum`: see the module doc)."""
    return f"max by (event_id) ({metric}{{{EVENT}}})"


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
           heatmap: bool = False) -> prom.Dataquery:
    query = prom.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DATASOURCE)
    if heatmap:  # cumulative `le` buckets -> per-bucket counts, ordered by bound
        query = query.format(pm.PromQueryFormat.HEATMAP)
    return query.instant() if instant else query.range()


def targets(*pairs: tuple[str, str]) -> list[prom.Dataquery]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


# ------------------------------------------------------------------------------------------------------ panels
def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return dash.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in steps])


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

    def __init__(self, name: str, expr: str, title: str, color: str) -> None:
        super().__init__(name=name, datasource=DATASOURCE, enable=True, icon_color=color, expr=expr)
        self.title_format = title

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "useValueForTime": True, "titleFormat": self.title_format,
                "tagKeys": "event_id", "step": "60s"}


class _Built(cogbuilder.Builder[dm.AnnotationQuery]):
    """Hands an already built model to a builder method that expects a builder."""

    def __init__(self, model: dm.AnnotationQuery) -> None:
        self.model = model

    def build(self) -> dm.AnnotationQuery:
        return self.model


def event_time_annotation(name: str, metric: str, title: str, color: str) -> _Built:
    """A marker at the event's start or end (event time): the gauge holds seconds, Grafana wants milliseconds."""
    return _Built(_PrometheusAnnotation(name, f"{event(metric)} * 1000", title, color))


def finish(builder: dash.Dashboard) -> dict:
    """The dashboard as JSON data, with panel ids numbered in order (stable links, stable diffs)."""
    model = builder.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return json.loads(json.dumps(model, cls=JSONEncoder))


def base(uid: str, title: str, description: str) -> dash.Dashboard:
    return (dash.Dashboard(title).uid(uid).description(description).tags(["livepulse"]).readonly()
            .time("now-1h", "now").refresh("10s").timezone("browser").tooltip(dm.DashboardCursorSync.CROSSHAIR))


# -------------------------------------------------------------------------------------------------- dashboards
def live_event() -> dict:
    """One webinar as it happens: audience, drop-off, engagement, sessions; start/end markers."""
    window_max = f"max by (event_id) (max_over_time(livepulse_attendees_current{{{EVENT}}}[10m]))"
    ratio = ("percentunit", thresholds((None, "red"), (0.3, "orange"), (0.5, "green")))
    score = thresholds((None, "red"), (30, "orange"), (60, "green"))
    builder = (
        base("livepulse-live-event", "LivePulse / Live event",
             "One live webinar, per event_id. Event series are reduced with max by (event_id) over the workers "
             "(two may briefly export the same event during a rebalance). Generated by grafana/dashboards.py.")
        .with_variable(dash.QueryVariable("event_id").label("Event").datasource(DATASOURCE)
                       .query("label_values(livepulse_attendees_current, event_id)")
                       .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
        .annotation(event_time_annotation("Event start", "livepulse_event_start_timestamp_seconds",
                                          "Event started", "green"))
        .annotation(event_time_annotation("Event end", "livepulse_event_end_timestamp_seconds",
                                          "Event ended", "red"))
        .with_row(dash.Row("Right now"))
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
        .with_panel(stat_panel("Average dwell", "Dwell of completed sessions / unique attendees.",
                               [target(f'{event("livepulse_dwell_seconds_total")} / '
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
                                 "Join and explicit leave interactions (idle timeouts are not leave records).",
                                 [target(event_per_minute("join|leave"), "{{type}}")], "cpm"))
        .with_panel(series_panel("Drop-off", "Share of the audience lost relative to its maximum over the last "
                                 "10 minutes (the drop-off alert fires at 25 %); 0 while the room has been empty.",
                                 [target(f"({window_max} - {event('livepulse_attendees_current')}) / "
                                         f"clamp_min({window_max}, 1)",
                                         "drop-off vs 10 min max")], "percentunit", low=0, high=1))
        .with_panel(bargauge.Panel().title("Session durations")
                    .description("Completed presence sessions per duration bucket (upper bound, seconds).")
                    .datasource(DATASOURCE).height(8).span(12).unit("short")
                    .targets([target(f"max by (event_id, le) (livepulse_session_duration_seconds_bucket{{{EVENT}}})",
                                     "<= {{le}} s", instant=True, heatmap=True)])
                    .display_mode(cm.BarGaugeDisplayMode.GRADIENT).orientation(cm.VizOrientation.HORIZONTAL)
                    .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
                    .thresholds(thresholds((None, "blue"))))
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
    """The workers: throughput, rejects and record anomalies, lag, state size, batch sizes, per worker."""
    down = thresholds((None, "red"), (1, "green"))
    batch = f"livepulse_batch_records_bucket{{{WORKERS}}}"
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
        .with_panel(stat_panel("Workers up", "Workers Prometheus scraped successfully.",
                               [target(f"sum (up{{{WORKERS}}})")], steps=down))
        .with_panel(stat_panel("Records per second", "Input records read, all topics.",
                               [target(workers("livepulse_records_processed_total", rate=True))], "recps"))
        .with_panel(stat_panel("Rejected per second", "Records sent to the dead-letter topic.",
                               [target(workers("livepulse_records_rejected_total", rate=True))], "recps",
                               steps=thresholds((None, "green"), (0.001, "orange"))))
        .with_panel(stat_panel("Events tracked", "Events held in state.",
                               [target(workers("livepulse_events_tracked"))]))
        .with_panel(stat_panel("Open sessions", "Present attendees held in state.",
                               [target(workers("livepulse_open_sessions"))]))
        .with_panel(stat_panel("Event-time lag", "Wall clock minus the newest record's ts, worst worker.",
                               [target(f"max (livepulse_event_time_lag_seconds{{{WORKERS}}})")], "s",
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
    )
    return finish(builder)


DASHBOARDS = {"livepulse-live-event.json": live_event, "livepulse-pipeline-health.json": pipeline_health}


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
