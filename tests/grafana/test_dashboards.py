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
from prometheus_client import CollectorRegistry, generate_latest

from grafana.dashboards import DASHBOARDS, OUT, all_queries, render, variable_promql
from streams.outputs.metrics import BatchSizes, LivePulseCollector
from streams.processor import Processor
from streams.settings import Settings
from streams.simulate.scenario import FIXED_START_MS, ScenarioConfig, generate
from streams.testing import raw

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "grafana" / "provisioning"
UIDS = {"livepulse-live-event.json": "livepulse-live-event",
        "livepulse-pipeline-health.json": "livepulse-pipeline-health"}
VARIABLES = {"event_id", "instance", "__rate_interval"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                "group_right", "inf", "nan"}


def committed() -> dict[str, dict]:
    return {name: json.loads((OUT / name).read_text()) for name in DASHBOARDS}


def queries() -> list[tuple[str, str, str]]:
    return [(name, title, expr) for name, data in committed().items() for title, expr in all_queries(data)]


@cache
def exported() -> tuple[frozenset[str], frozenset[str]]:
    """(every sample name, names of event series) of /metrics, as the worker serves it (collector + batch
    sizes, like streams/app.py), after a small simulated webinar that started, ended, had registrations and a
    malformed record -- plus `up`, which Prometheus adds to every target."""
    settings = Settings()
    cfg = ScenarioConfig(seed=5, event_id="grafana-check", registrants=40, duration_s=600)
    topics = {"interactions": settings.topic_interactions, "events": settings.topic_events}
    records = [raw(topics[r.topic], r.value, key=r.key, offset=n) for n, r in enumerate(generate(cfg))]
    records.append(raw(settings.topic_interactions, b"{not json", key=b"grafana-check", offset=len(records)))
    wall = (FIXED_START_MS + cfg.duration_s * 1000) / 1000 + 60
    proc, sizes = Processor(settings, partitions=1), BatchSizes()
    for i in range(0, len(records), 200):
        batch = records[i:i + 200]
        proc.process(batch, wall)
        sizes.observe(len(batch))
    proc.tick(wall, snapshots=True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LivePulseCollector(proc, sizes))
    samples = [line for line in generate_latest(registry).decode().splitlines() if line and line[0] != "#"]
    name = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
    names = {name.match(line).group(0) for line in samples}
    per_event = {name.match(line).group(0) for line in samples if 'event_id="' in line}
    return frozenset(names | {"up"}), frozenset(per_event)


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
    assert {"annotation: Event start", "annotation: Event end", "variable: event_id", "variable: instance"} <= titles
    assert len(found) >= 40
    live = committed()["livepulse-live-event.json"]
    assert ("variable: event_id", "count by (event_id) (livepulse_attendees_current)") in all_queries(live)
    for anno in live["annotations"]["list"]:
        assert anno["useValueForTime"] is True and anno["expr"].endswith(" * 1000")  # seconds -> ms


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
    if not mounts:
        pytest.skip("no compose file mounts grafana/dashboards yet")
    assert all(t.rstrip("/") == "/var/lib/grafana/dashboards/livepulse" for _, t in mounts), mounts
    provisioning = [t for s, t in compose_mounts() if s.rstrip("/").endswith("grafana/provisioning")]
    assert provisioning, "grafana/provisioning is not mounted"
    assert all(t.rstrip("/") == "/etc/grafana/provisioning" for t in provisioning), provisioning
