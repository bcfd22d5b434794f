"""Alerting as code: the Prometheus rules, their promtool unit tests, the runbook and the Alertmanager example.

The promtool / amtool checks skip (saying so) when Debian's `prometheus` / `prometheus-alertmanager` packages are
not installed; everything else is plain Python over the committed files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.app import input_topics
from streams.outputs.metrics import BatchSizes, ConsumerLag, exposition
from streams.processor import Processor
from streams.settings import Settings
from streams.simulate.scenario import FIXED_START_MS, ScenarioConfig, generate
from streams.testing import raw

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "livepulse.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "livepulse.test.yml"
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

SEVERITIES = {"page", "warning", "ticket"}
DROP_ALERT = "LivePulseAudienceDropOff"
# labels Prometheus adds to every scraped series, and the histogram bucket label
SCRAPE_LABELS = {"job", "instance", "le"}
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "atan2",
    "inf", "nan",
}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not found: install Debian's `prometheus` package (`make test` does as root)",
)
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="amtool not found: install Debian's `prometheus-alertmanager` package (apt-get install it as root)",
)


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)


def output(result: subprocess.CompletedProcess) -> str:
    return f"$ {' '.join(result.args)}\n{result.stdout}{result.stderr}"


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict]:
    found: dict[str, dict] = {}
    for rule in rules():
        if "alert" in rule:
            assert rule["alert"] not in found, f"alert {rule['alert']} defined twice"
            found[rule["alert"]] = rule
    return found


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings: lower case, punctuation dropped, spaces -> '-'."""
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
            for title in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, re.MULTILINE)}


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric or recorded series names, label names) an expression selects on -- a small PromQL scanner,
    enough for the rule file: strings, durations, functions and keywords are not names."""
    labels: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        labels |= {name.strip() for name in grouping.split(",") if name.strip()}
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    bare = re.sub(r"\{[^}]*\}", "", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # ranges, subqueries
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\boffset\s+-?\d+[smhdwy]\b", "", bare)
    names = {m.group(1) for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", bare)}
    return {n for n in names if n.lower() not in PROMQL_WORDS}, labels


def exported_series() -> tuple[set[str], set[str], set[str], set[str]]:
    """(sample names, label names, interaction types, names of event series) of /metrics after a small simulated
    webinar that started, ended and had a malformed record: what a worker really exports (with its batch sizes and
    consumer lag, like streams/app.py)."""
    settings = Settings()
    cfg = ScenarioConfig(seed=3, event_id="rules-check", registrants=40, duration_s=600, malformed_rate=0.0)
    topics = {"interactions": settings.topic_interactions, "events": settings.topic_events}
    records = [raw(topics[r.topic], r.value, key=r.key, offset=n) for n, r in enumerate(generate(cfg))]
    records.append(raw(settings.topic_interactions, b"{not json", key=b"rules-check", offset=len(records)))
    wall = (FIXED_START_MS + cfg.duration_s * 1000) / 1000 + 60
    proc, sizes, lag = Processor(settings, partitions=1), BatchSizes(), ConsumerLag(input_topics(settings))
    for i in range(0, len(records), 200):
        proc.process(records[i:i + 200], wall)
        sizes.observe(len(records[i:i + 200]))
    lag.update(settings.topic_interactions, 0, len(records), len(records))
    proc.tick(wall, snapshots=True)
    text = exposition(proc, sizes, lag).decode()
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    names = {re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0) for line in samples}
    label_names = {m for line in samples for m in re.findall(r'[{,]([A-Za-z_][A-Za-z0-9_]*)="', line)}
    types = set(re.findall(r'^livepulse_interactions_total\{[^}]*type="([^"]+)"', text, re.MULTILINE))
    per_event = {re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0) for line in samples if 'event_id="' in line}
    return names, label_names, types, per_event


# ------------------------------------------------------------------------------------------------ promtool
@needs_promtool
def test_promtool_check_rules():
    result = run("promtool", "check", "rules", str(RULES))
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout, output(result)


@needs_promtool
def test_promtool_unit_tests_pass():
    result = run("promtool", "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout, output(result)


def test_every_alert_is_unit_tested_firing_and_not_firing():
    spec = yaml.safe_load(RULE_TESTS.read_text())
    assert spec["rule_files"] == ["../rules/livepulse.rules.yml"]
    firing: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for test in spec["tests"]:
        for case in test.get("alert_rule_test", []):
            seen = firing if case.get("exp_alerts") else quiet
            seen[case["alertname"]] = seen.get(case["alertname"], 0) + 1
            for alert in case.get("exp_alerts") or []:
                assert alert.get("exp_annotations"), f"{test['name']}: {case['alertname']} without exp_annotations"
    unknown = (set(firing) | set(quiet)) - set(alerts())
    assert not unknown, f"tests of alerts that do not exist: {unknown}"
    untested = [name for name in alerts() if name not in firing or name not in quiet]
    assert not untested, f"alerts without a firing and a not-firing test case: {untested}"


@needs_promtool
def test_shortened_drop_off_rules_are_valid(tmp_path):
    """What the end-to-end test does to the drop-off alert (durations only) still gives valid rules."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    shortened = 0
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == DROP_ALERT:
                rule["expr"] = rule["expr"].replace("[10m]", "[2m]")
                rule["for"] = "10s"
                shortened += 1
    assert shortened == 1, f"{DROP_ALERT} found {shortened} times"
    path = tmp_path / "short.rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    result = run("promtool", "check", "rules", str(path))
    assert result.returncode == 0, output(result)


# ------------------------------------------------------------------------------------------- rule contents
def test_drop_off_parameters_are_documented_literals():
    """The documented parameters sit in the header and as literals in the expression; the e2e test shortens only
    the durations ("[10m]" and "for: 1m") by text substitution."""
    header = "\n".join(line for line in RULES.read_text().splitlines() if line.startswith("#"))
    documented = dict(re.findall(r"^#\s+(DROP_[A-Z_]+)\s+(\S+)", header, re.MULTILINE))
    assert documented == {"DROP_RATIO": "0.25", "DROP_MIN_AUDIENCE": "20", "DROP_LOOKBACK": "10m",
                          "DROP_HOLD": "1m", "DROP_WIND_DOWN": "300"}, documented
    rule = alerts()[DROP_ALERT]
    expr = " ".join(rule["expr"].split())
    assert rule["for"] == "1m"
    assert "[10m]" in expr and not re.search(r"\[(?!10m\])[^\]]*\]", expr), "the only range must be [10m]"
    assert ">= 0.25" in expr and "[10m]) >= 20" in expr and "- 300" in expr, expr
    assert "livepulse:event_end_timestamp_seconds:max" in expr, "ended events must not alert"
    text = RULES.read_text()
    block = text[text.index(f"alert: {DROP_ALERT}"):]
    block = block[:block.index("- alert:")]
    assert "for: 1m" in block, "the e2e test substitutes the text 'for: 1m'"


def test_every_alert_has_severity_summary_description_and_runbook():
    anchors = github_anchors(RUNBOOK.read_text())
    problems = []
    for name, rule in alerts().items():
        labels, notes = rule.get("labels", {}), rule.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r} not in {sorted(SEVERITIES)}")
        for key in ("summary", "description", "runbook_url"):
            if not str(notes.get(key, "")).strip():
                problems.append(f"{name}: no {key}")
        description = notes.get("description", "")
        if "event_id" in rule["expr"] and "$labels.event_id" not in description:
            problems.append(f"{name}: an event alert whose description does not name the event")
        if not re.search(r"\$value|\$labels\.\w+", description):
            problems.append(f"{name}: description without $value/$labels")
        match = re.fullmatch(r"(?:.*/)?deploy/RUNBOOK\.md#([\w-]+)", notes.get("runbook_url", ""))
        if not match:
            problems.append(f"{name}: runbook_url {notes.get('runbook_url')!r} is not deploy/RUNBOOK.md#<anchor>")
        elif match.group(1) not in anchors:
            problems.append(f"{name}: anchor #{match.group(1)} is not a heading of {RUNBOOK.name}")
        elif match.group(1) != name.lower():
            problems.append(f"{name}: runbook_url points at #{match.group(1)}, not at its own section")
    assert not problems, "\n".join(problems)


def test_runbook_has_a_section_per_alert_and_no_other():
    sections = set(re.findall(r"^## (\S+)\s*$", RUNBOOK.read_text(), re.MULTILINE))
    assert sections == set(alerts()), f"runbook sections {sorted(sections)} vs alerts {sorted(alerts())}"


def test_rules_use_only_exported_metrics_and_labels():
    names, label_names, types, _ = exported_series()
    assert {"livepulse_attendees_current", "livepulse_event_end_timestamp_seconds",
            "livepulse_event_scheduled_end_timestamp_seconds", "livepulse_records_rejected_total"} <= names, names
    known_names = names | {"up"} | recorded()
    known_labels = label_names | SCRAPE_LABELS
    problems = []
    for rule in rules():
        used, used_labels = promql_names(rule["expr"])
        what = rule.get("alert") or rule.get("record")
        if unknown := used - known_names:
            problems.append(f"{what}: not exported by a worker nor recorded here: {sorted(unknown)}")
        if unknown := used_labels - known_labels:
            problems.append(f"{what}: labels no series has: {sorted(unknown)}")
        for alternatives in re.findall(r'\btype\s*=~?\s*"([^"]+)"', rule["expr"]):
            if unknown := set(alternatives.split("|")) - types:
                problems.append(f"{what}: interaction types that do not exist: {sorted(unknown)}")
    assert not problems, "\n".join(problems)


def test_event_series_are_never_summed_across_instances():
    """Two workers may export the same event during a rebalance: a rule reading an event series directly is a
    `max by (event_id)` recording rule (a sum within one instance first is fine); alerts use the recordings."""
    _, _, _, per_event = exported_series()
    assert "livepulse_attendees_current" in per_event and "livepulse_records_processed_total" not in per_event
    problems = []
    for rule in rules():
        expr = " ".join(rule["expr"].split())
        what = rule.get("alert") or rule.get("record")
        used, _ = promql_names(expr)
        if not used & per_event:
            continue
        if not expr.startswith("max by (event_id) ("):
            problems.append(f"{what}: reads event series {sorted(used & per_event)} without max by (event_id)")
        for agg, grouping in re.findall(r"\b(sum|count|avg|min|max)\s+by\s*\(([^)]*)\)", expr):
            keys = {k.strip() for k in grouping.split(",")}
            if agg != "max" and "instance" not in keys:
                problems.append(f"{what}: {agg} by ({grouping}) adds up workers")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------- alertmanager
def test_alertmanager_routes_every_severity_and_groups_per_event():
    config = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"] for r in config["receivers"]}
    route = config["route"]
    assert {"alertname", "event_id"} <= set(route["group_by"]), route["group_by"]
    assert route["receiver"] in receivers
    routed = {}
    for child in route["routes"]:
        assert child["receiver"] in receivers, child
        for matcher in child["matchers"]:
            m = re.fullmatch(r'severity(=~|=)"([^"]+)"', matcher)
            if m:
                for severity in (m.group(2).split("|") if m.group(1) == "=~" else [m.group(2)]):
                    routed.setdefault(severity, []).append(child["receiver"])
    assert set(routed) == SEVERITIES, routed
    assert len({tuple(v) for v in routed.values()}) == len(SEVERITIES), f"severities share receivers: {routed}"
    names = set(alerts())
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            m = re.fullmatch(r'alertname(=~|=)"([^"]+)"', matcher)
            assert m, f"inhibition matches on something else than alertname: {matcher}"
            unknown = set(m.group(2).split("|")) - names
            assert not unknown, f"inhibition names alerts that do not exist: {unknown}"
        assert rule["equal"], f"an inhibition without `equal` silences everything: {rule}"
    targets = {re.search(r'"([^"]+)"', t).group(1) for r in config["inhibit_rules"] for t in r["target_matchers"]}
    assert "LivePulseEventTimeLagHigh" in targets, "a worker down must inhibit the lag alert"


@needs_amtool
def test_amtool_check_config():
    result = run("amtool", "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout, output(result)


@needs_amtool
@pytest.mark.parametrize("labels, receivers", [
    (["severity=page", f"alertname={DROP_ALERT}", "event_id=w1"], "oncall-pager,team-chat"),
    (["severity=warning", "alertname=LivePulseEventTimeLagHigh"], "team-chat"),
    (["severity=ticket", "alertname=LivePulseInputsRejected"], "ticket-queue"),
])
def test_amtool_routes_by_severity(labels, receivers):
    result = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                 f"--verify.receivers={receivers}", *labels)
    assert result.returncode == 0, output(result)
