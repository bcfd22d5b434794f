"""The committed Grafana dashboards: current, well formed, and querying only what a worker really exports.

A real Prometheus runs every query in tests/e2e; these checks are the fast, structural half: the JSON is what
grafana/dashboards.py generates, every panel queries something, event series are reduced with `max by
(event_id)` (two workers may export one event during a rebalance), and every metric name exists in /metrics.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from grafana.dashboards import DASHBOARDS, OUT, all_queries, render, variable_promql
from streams.app import input_topics
from streams.outputs.metrics import BatchSizes, ConsumerLag, LivePulseCollector, Ownership, worker_registry
from streams.outputs.snapshots import SnapshotPacing
from streams.processor import Processor
from streams.settings import Settings
from streams.simulate.scenario import FIXED_START_MS, ScenarioConfig, generate
from streams.testing import raw

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "livepulse.rules.yml"
# what Prometheus adds: `up` and the scrape series of every target, and the ALERTS of the rules
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}
PROVISIONING = ROOT / "grafana" / "provisioning"
UIDS = {"livepulse-live-event.json": "livepulse-live-event",
        "livepulse-pipeline-health.json": "livepulse-pipeline-health",
        "livepulse-marketing-roi.json": "livepulse-marketing-roi"}
VARIABLES = {"event_id", "organizer_id", "instance", "__rate_interval", "__range"}
ROI = "livepulse-marketing-roi.json"
ORGANIZER = "grafana-marketing"
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                "group_right", "inf", "nan"}


def committed() -> dict[str, dict]:
    return {name: json.loads((OUT / name).read_text()) for name in DASHBOARDS}


def queries() -> list[tuple[str, str, str]]:
    return [(name, title, expr) for name, data in committed().items() for title, expr in all_queries(data)]


def crm_opportunities(topic: str, cfg: ScenarioConfig, records: list) -> list:
    """Opportunities of three attendees of the webinar, a minute after its end; one won in the cost's currency."""
    joined = list(dict.fromkeys(json.loads(r.value)["attendee_id"] for r in records
                                if r.topic == "interactions" and b'"type":"join"' in r.value))[:3]
    stages = ("created", "qualified", "won")
    return [raw(topic, {"opportunity_id": f"opp-{n}", "organizer_id": ORGANIZER, "attendee_id": aid,
                        "amount": 1000.0 * (n + 1), "currency": cfg.currency, "stage": stage,
                        "ts": cfg.end + 60_000}, key=ORGANIZER, offset=n)
            for n, (aid, stage) in enumerate(zip(joined, stages))]


@cache
def exported() -> tuple[frozenset[str], frozenset[str]]:
    """(every sample name, names of event series) of /metrics, as the worker serves it (its whole registry, like
    streams/app.py), after a small simulated webinar of an organiser that started, ended, had
    registrations, a malformed record and CRM opportunities afterwards (the ROI facts looped back as the worker
    consumes them) -- plus what Prometheus adds (up, scrape series, ALERTS) and the recording rules write."""
    settings = Settings()
    cfg = ScenarioConfig(seed=5, event_id="grafana-check", registrants=40, duration_s=600,
                         extra={"organizer_id": ORGANIZER})
    topics = {"interactions": settings.topic_interactions, "events": settings.topic_events}
    generated = generate(cfg)
    records = [raw(topics[r.topic], r.value, key=r.key, offset=n) for n, r in enumerate(generated)]
    records.append(raw(settings.topic_interactions, b"{not json", key=b"grafana-check", offset=len(records)))
    wall = (FIXED_START_MS + cfg.duration_s * 1000) / 1000 + 60
    proc, sizes = Processor(settings, partitions=1), BatchSizes()
    facts: list[tuple[bytes, bytes]] = []
    for i in range(0, len(records), 200):
        batch = records[i:i + 200]
        facts += proc.process(batch, wall).roi_facts
        sizes.observe(len(batch))
    facts += proc.tick(wall, snapshots=True).roi_facts
    wall += 3600  # silence past the allowed lateness: the summary and the event's ROI facts are due
    facts += proc.tick(wall, snapshots=False).roi_facts
    facts += proc.process(crm_opportunities(settings.topic_opportunities, cfg, generated), wall).roi_facts
    offset = 0
    while facts:  # the ROI facts topic (ended events, leads, forwarded opportunities), read back by the worker
        batch = [raw(settings.topic_roi_facts, value, key=key, offset=offset + n) for n, (key, value) in enumerate(facts)]
        offset += len(batch)
        facts = proc.process(batch, wall).roi_facts
    lag = ConsumerLag(input_topics(settings), (settings.topic_interactions, settings.topic_rekeyed))
    lag.read(settings.topic_interactions, wall)
    registry = worker_registry(LivePulseCollector(
        proc, sizes, lag, SnapshotPacing(settings.snapshot_interval_s, settings.snapshot_max_share), Ownership()))
    samples = [line for line in generate_latest(registry).decode().splitlines() if line and line[0] != "#"]
    name = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
    names = {name.match(line).group(0) for line in samples}
    per_event = {name.match(line).group(0) for line in samples if 'event_id="' in line}
    return frozenset(names | PROMETHEUS_SERIES | recorded()), frozenset(per_event)


def recorded() -> set[str]:
    """The series the committed recording rules write."""
    return {rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
            if "record" in rule}


def metric_names(expr: str) -> set[str]:
    """Series names in a PromQL expression: identifiers left once strings, matchers, ranges, grouping clauses
    and function calls are taken out."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    found = re.findall(r"(?<![\w:.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", bare)
    return {n for n in found if n.lower() not in PROMQL_WORDS}


def reduced_by_event(expr: str, at: int) -> bool:
    """Whether position `at` lies inside the body of a `max by (..., event_id, ...)` aggregation."""
    opened: list[int] = []
    for i, ch in enumerate(expr[:at]):
        if ch == "(":
            opened.append(i)
        elif ch == ")":
            opened.pop()
    for i in opened:
        m = re.search(r"\bmax\s+by\s*\(([^()]*)\)\s*$", expr[:i])
        if m and "event_id" in re.split(r"[\s,]+", m.group(1)):
            return True
    return False


# ---------------------------------------------------------------------------------------------------- the files
def test_committed_json_is_what_the_generator_writes():
    assert set(DASHBOARDS) == set(UIDS), "every generated dashboard is checked here (and nothing else)"
    stale = [name for name, build in DASHBOARDS.items()
             if not (OUT / name).exists() or (OUT / name).read_text() != render(build())]
    assert not stale, (f"stale dashboards {stale}: regenerate with `.venv/bin/python -m grafana.dashboards` "
                       "and commit grafana/dashboards/")


def test_generation_is_deterministic():
    for build in DASHBOARDS.values():
        assert render(build()) == render(build())


def test_fixed_uids_one_datasource_numbered_panels():
    for name, data in committed().items():
        assert data["uid"] == UIDS[name]
        text = json.dumps(data)
        uids = set(re.findall(r'"datasource": \{"type": "prometheus", "uid": "([^"]+)"\}', text))
        assert uids == {"livepulse-prometheus"}, uids
        ids = [p["id"] for p in data["panels"]]
        assert ids == list(range(1, len(ids) + 1))


# -------------------------------------------------------------------------------------------------- the queries
def test_every_panel_has_a_query():
    for name, data in committed().items():
        for panel in data["panels"]:
            if panel["type"] == "row":
                continue
            exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
            assert exprs and all(exprs), f"{name} / {panel.get('title')}: panel without a query"


def test_all_queries_covers_panels_annotations_and_variables():
    found = queries()
    titles = {title for _, title, _ in found}
    assert {"annotation: Event start", "annotation: Event end", "annotation: Scheduled start",
            "annotation: Scheduled end", "annotation: Firing alerts", "variable: event_id",
            "variable: organizer_id", "variable: instance"} <= titles
    assert len(found) >= 60
    live = committed()["livepulse-live-event.json"]
    for anno in live["annotations"]["list"]:
        if anno["name"] == "Firing alerts":  # a region while ALERTS exists
            assert anno["useValueForTime"] is False and anno["expr"].startswith("ALERTS{")
        else:
            assert anno["useValueForTime"] is True and anno["expr"].endswith(" * 1000")  # seconds -> ms


def test_live_event_picker_defaults_to_the_fullest_room_of_the_selected_organiser():
    variables = {v["name"]: v for v in committed()["livepulse-live-event.json"]["templating"]["list"]}
    assert list(variables) == ["organizer_id", "event_id"], "the organiser first: the events depend on it"
    event = variables["event_id"]
    assert event["query"].startswith("query_result(sort_desc(") and 'organizer_id=~"$organizer_id"' in event["query"]
    assert event["sort"] == 0, "Grafana must keep the query's order (fullest room first) and select its first"
    assert "current" not in event or not event["current"], "no saved event: Grafana selects the first option"
    assert re.fullmatch(r"/.+/", event["regex"]) and re.search(event["regex"][1:-1], 'x{event_id="e-1"} 30')[1] \
        == "e-1"
    organizer = variables["organizer_id"]
    assert organizer["includeAll"] and organizer["allValue"] == ".*"


def test_live_dashboard_holds_a_webinar_and_marks_the_drop_off_threshold():
    live = committed()["livepulse-live-event.json"]
    assert live["time"]["from"] == "now-2h", "a 90-minute webinar with its lobby fits"
    panels = {p["title"]: p for p in live["panels"]}
    drop = panels["Drop-off"]["fieldConfig"]["defaults"]
    assert drop["custom"]["thresholdsStyle"]["mode"] in ("line", "dashed")
    assert [step["value"] for step in drop["thresholds"]["steps"]] == [None, 0.25]
    assert panels["Data delay"]["id"] == 2, "the data delay comes first"
    assert "livepulse_dwell_including_open_seconds" in panels["Average dwell"]["targets"][0]["expr"]
    assert any("livepulse_session_duration_seconds_count" in t["expr"]
               for t in panels["Joins and leaves per minute"]["targets"]), "leaves including idle timeouts"


def test_dashboards_link_to_each_other():
    for name, data in committed().items():
        [link] = data["links"]
        assert link["type"] == "dashboards" and link["tags"] == ["livepulse"], name
        assert link["keepTime"] and link["includeVars"], name
        assert "livepulse" in data["tags"], name


def test_pipeline_dashboard_shows_process_metrics_rebalances_and_scrapes():
    used = {n for _, title, expr in queries() if _ == "livepulse-pipeline-health.json" for n in metric_names(expr)}
    assert {"process_start_time_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total",
            "process_open_fds", "livepulse_partitions_owned", "livepulse_rebalances_total",
            "livepulse_records_deferred_total", "livepulse_records_capped_total", "livepulse_events_abandoned_total",
            "scrape_duration_seconds", "scrape_samples_scraped",
            "livepulse_input_last_record_timestamp_seconds"} <= used, used


def test_variable_queries_become_promql():
    assert variable_promql('label_values(up{job="x"}, instance)') == 'count by (instance) (up{job="x"})'
    assert variable_promql("query_result(max(up))") == "max(up)"
    with pytest.raises(ValueError):
        variable_promql("metrics(livepulse_.*)")


def test_only_the_known_variables_are_used():
    for name, title, expr in queries():
        used = set(re.findall(r"\$\{?(\w+)", expr))
        assert used <= VARIABLES, f"{name} / {title}: unknown variables {used - VARIABLES} in {expr}"


def test_event_series_are_reduced_with_max_by_event_id():
    _, per_event = exported()
    assert {"livepulse_attendees_current", "livepulse_interactions_total"} <= per_event
    bad = []
    for name, title, expr in queries():
        if title.startswith("variable: "):
            continue  # the variable lists event ids; it aggregates nothing
        for metric in metric_names(expr) & per_event:
            for m in re.finditer(rf"(?<![\w:]){re.escape(metric)}(?![\w:])", expr):
                if not reduced_by_event(expr, m.start()):
                    bad.append(f"{name} / {title}: {metric} not inside max by (event_id): {expr}")
    assert not bad, "\n".join(bad)


def test_the_max_by_check_catches_a_sum():
    expr = 'sum(livepulse_attendees_current{event_id="e"})'
    assert not reduced_by_event(expr, expr.index("livepulse"))
    expr = 'max by (event_id) (rate(livepulse_interactions_total[1m]))'
    assert reduced_by_event(expr, expr.index("livepulse"))


def test_every_metric_is_exported_by_a_worker():
    names, _ = exported()
    assert {"livepulse_attendance_ratio", "livepulse_records_rejected_total", "livepulse_batch_records_bucket",
            "livepulse_event_end_timestamp_seconds"} <= names, "the simulated webinar misses a rare series"
    used = {(title, n) for _, title, expr in queries() for n in metric_names(expr)}
    unknown = sorted({f"{title}: {n}" for title, n in used if n not in names})
    assert not unknown, f"metrics the worker does not export: {unknown}"
    assert {n for _, n in used} >= {"up", "livepulse_attendees_current", "livepulse_records_processed_total"}


# ----------------------------------------------------------------------------------------------- provisioning
def test_datasource_provisioning():
    config = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    [source] = config["datasources"]
    assert (source["uid"], source["type"], source["url"]) == ("livepulse-prometheus", "prometheus",
                                                              "http://prometheus:9090")


def test_dashboard_provisioning_loads_the_dashboard_folder():
    config = yaml.safe_load((PROVISIONING / "dashboards" / "livepulse.yaml").read_text())
    [provider] = config["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path == "/var/lib/grafana/dashboards/livepulse"
    assert sorted(p.name for p in OUT.glob("*.json")) == sorted(DASHBOARDS)


def compose_mounts() -> list[tuple[str, str]]:
    """(source, target) of every volume of every compose file in the repository that mentions grafana."""
    found = []
    for path in [*ROOT.glob("*compose*.y*ml"), *(ROOT / "deploy").rglob("*.y*ml")]:
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue
        for doc in docs:
            services = doc.get("services") if isinstance(doc, dict) else None
            for service in (services or {}).values():
                for volume in (service or {}).get("volumes") or []:
                    if isinstance(volume, dict):
                        found.append((str(volume.get("source", "")), str(volume.get("target", ""))))
                    elif str(volume).count(":") >= 1:
                        source, target = str(volume).split(":")[:2]
                        found.append((source, target))
    return found


def test_compose_mounts_the_dashboards_where_the_provider_reads_them():
    mounts = [(s, t) for s, t in compose_mounts() if s.rstrip("/").endswith("grafana/dashboards")]
    assert mounts, "no compose file mounts grafana/dashboards (deploy/compose.yaml should)"
    assert all(t.rstrip("/") == "/var/lib/grafana/dashboards/livepulse" for _, t in mounts), mounts
    provisioning = [t for s, t in compose_mounts() if s.rstrip("/").endswith("grafana/provisioning")]
    assert provisioning, "grafana/provisioning is not mounted"
    assert all(t.rstrip("/") == "/etc/grafana/provisioning" for t in provisioning), provisioning


# -------------------------------------------------------------------------------------------- the ROI dashboard
def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, matchers) of every `metric{...}` selector in an expression."""
    return re.findall(r"([A-Za-z_:][\w:]*)\{([^}]*)\}", expr)


def test_roi_variables_organizer_then_its_events():
    variables = {v["name"]: v for v in committed()[ROI]["templating"]["list"]}
    assert set(variables) == {"organizer_id", "event_id"}
    organizer, event = variables["organizer_id"], variables["event_id"]
    assert organizer["query"] == "label_values(livepulse_roi_new_leads, organizer_id)"
    assert organizer["includeAll"] and organizer["allValue"] == ".*"
    assert event["query"] == 'label_values(livepulse_roi_new_leads{organizer_id=~"$organizer_id"}, event_id)'
    assert event["multi"] and event["includeAll"]
    # "All" events must expand to the organiser's events: the engagement-stage series have no organizer_id label,
    # so a ".*" would show every organiser's events there.
    assert "allValue" not in event


def test_roi_queries_filter_the_selected_events_and_organiser():
    found = [(title, expr) for title, expr in all_queries(committed()[ROI]) if not title.startswith("variable: ")]
    assert len(found) >= 15
    for title, expr in found:
        for metric, matchers in selectors(expr):
            assert 'event_id=~"$event_id"' in matchers, f"{title}: {metric} not filtered by the events: {expr}"
            roi = "livepulse_roi_" in metric
            assert ('organizer_id=~"$organizer_id"' in matchers) == roi, (
                f"{title}: {metric}: only livepulse_roi_* series carry organizer_id: {expr}")
            if ":" in metric:  # a recording rule's series: its rule selects the job
                assert metric in recorded(), f"{title}: {metric} is no recording rule"
                continue
            assert 'job="livepulse"' in matchers, f"{title}: {expr}"
            # a worker drops an ended event's engagement series after LIVEPULSE_RETENTION_S; the ROI series (and the
            # event list) stay for the attribution window: show the engagement figures as last seen
            assert (f"last_over_time({metric}{{{matchers}}}[$__range])" in expr) != roi, f"{title}: {expr}"


def test_roi_panels_are_instant_per_event_figures():
    panels = [p for p in committed()[ROI]["panels"] if p["type"] != "row"]
    assert {p["type"] for p in panels} == {"bargauge", "barchart", "table", "stat"}
    for panel in panels:
        for t in panel["targets"]:
            assert t["instant"] is True and t["range"] is False, f"{panel['title']}: current figures, not history"
    units = {p["title"]: p["fieldConfig"]["defaults"].get("unit") for p in panels}
    assert units["Attendance rate"] == units["ROI (provisional)"] == units["Final ROI"] == "percentunit"
    assert units["Key accounts"] == "percentunit" and units["Provisional until"] == "dateTimeAsIso"
    for title in ("ROI (provisional)", "Final ROI"):
        roi = next(p for p in panels if p["title"] == title)
        assert roi["fieldConfig"]["defaults"]["min"] == -1 and "max" not in roi["fieldConfig"]["defaults"]


def test_roi_is_provisional_in_neutral_colours_until_the_window_closes_then_final():
    panels = {p["title"]: p for p in committed()[ROI]["panels"]}
    provisional = panels["ROI (provisional)"]
    [t] = provisional["targets"]
    assert "livepulse_roi_provisional" in t["expr"] and t["expr"].endswith("== 1)")
    colours = {step["color"] for step in provisional["fieldConfig"]["defaults"]["thresholds"]["steps"]}
    assert "red" not in colours, "a provisional ROI is not shown as a loss"
    assert "livepulse_roi_provisional" in panels["Provisional until"]["targets"][0]["expr"]
    [final] = panels["Final ROI"]["targets"]
    assert "event_id_organizer_id:livepulse_roi_ratio:final" in final["expr"]


def test_roi_dashboard_shows_cost_the_funnel_and_money_in_currency_units():
    panels = {p["title"]: p for p in committed()[ROI]["panels"]}
    assert "livepulse_roi_cost{" in panels["Cost"]["targets"][0]["expr"]
    funnel = " ".join(t["expr"] for t in panels["Funnel"]["targets"])
    for metric in ("livepulse_roi_registrations", "livepulse_roi_attendees", "livepulse_roi_mqls",
                   "livepulse_roi_new_leads", "livepulse_roi_opportunities"):
        assert metric in funnel, metric
    for title in ("Cost", "Cost per registration", "Cost per attendee", "Cost per new lead", "Pipeline", "Won"):
        overrides = panels[title]["fieldConfig"]["overrides"]
        units = {o["matcher"]["options"]: o["properties"][0]["value"] for o in overrides}
        assert units[r".*\(EUR\)$"] == "currencyEUR", (title, units)
        assert panels[title]["targets"][0]["legendFormat"].endswith("({{currency}})"), title


def test_roi_comparison_table_merges_one_row_per_event():
    [panel] = [p for p in committed()[ROI]["panels"] if p["type"] == "table"]
    assert [t["id"] for t in panel["transformations"]] == ["merge", "organize"]
    assert all(t["format"] == "table" and t["instant"] for t in panel["targets"])
    rename = panel["transformations"][1]["options"]["renameByName"]
    refs = [t["refId"] for t in panel["targets"]]
    assert {f"Value #{r}" for r in refs} <= set(rename), "every query's value column is named"
    assert rename["event_id"] == "Event"
    # every query keeps event_id, the label the rows are merged on
    for t in panel["targets"]:
        assert re.match(r"max by \(event_id\b", t["expr"]), t["expr"]
    named = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]}
    assert named == {rename[f"Value #{r}"] for r in refs}


def test_roi_leads_by_grade_is_stacked_per_event():
    [panel] = [p for p in committed()[ROI]["panels"] if p["type"] == "barchart"]
    assert panel["options"]["stacking"] == "normal"
    [t] = panel["targets"]
    assert "max by (event_id, grade)" in t["expr"] and t["format"] == "table"
    [matrix] = panel["transformations"]
    assert matrix["id"] == "groupingToMatrix" and matrix["options"]["rowField"] == "event_id"
