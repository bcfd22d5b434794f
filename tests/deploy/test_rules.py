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
from streams.outputs.metrics import BatchSizes, ConsumerLag, Ownership, exposition
from streams.partitioning import partition_for
from streams.processor import Processor, RawRecord
from streams.settings import Settings
from streams.simulate.scenario import FIXED_START_MS, ScenarioConfig, generate
from streams.testing import raw

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "livepulse.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "livepulse.test.yml"
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

SEVERITIES = {"page", "warning", "ticket", "none"}
NOTIFY = {"organizer", "operator", "deadmansswitch"}
DROP_ALERT = "LivePulseAudienceDropOff"
STALL_ALERT = "LivePulseInputStalled"
WATCHDOG = "LivePulseWatchdog"
AUDIENCE_ALERTS = {DROP_ALERT, "LivePulseEngagementStalled"}
# runbook_url / dashboard_url: an external label's value, or the default written in the rule
RUNBOOK_URL = re.compile(r"\{\{ with \$externalLabels\.livepulse_runbook_url \}\}\{\{ \. \}\}\{\{ else \}\}"
                         r"(https?://\S+/deploy/RUNBOOK\.md)\{\{ end \}\}#([\w-]+)")
GRAFANA_URL = re.compile(r"\{\{ with \$externalLabels\.livepulse_grafana_url \}\}\{\{ \. \}\}\{\{ else \}\}"
                         r"(https?://[^{}\s]+)\{\{ end \}\}(/d/[\w-]+/[\w-]+)(\?.*)?")
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
    webinar that started, ended (its ROI facts reaching the ledger) and had a malformed record: what a worker
    really exports (its whole registry, with batch sizes, consumer lag and ownership, like streams/app.py)."""
    settings = Settings()
    cfg = ScenarioConfig(seed=3, event_id="rules-check", registrants=40, duration_s=600, malformed_rate=0.0)
    topics = {"interactions": settings.topic_interactions, "events": settings.topic_events}
    records = [raw(topics[r.topic], r.value, key=r.key, offset=n) for n, r in enumerate(generate(cfg))]
    records.append(raw(settings.topic_interactions, b"{not json", key=b"rules-check", offset=len(records)))
    wall = (FIXED_START_MS + cfg.duration_s * 1000) / 1000 + 60
    proc, sizes = Processor(settings, partitions=1), BatchSizes()
    lag = ConsumerLag(input_topics(settings), (settings.topic_interactions, settings.topic_rekeyed))
    for i in range(0, len(records), 200):
        proc.process(records[i:i + 200], wall)
        sizes.observe(len(records[i:i + 200]))
    lag.update(settings.topic_interactions, 0, len(records), len(records))
    out = proc.tick(wall, snapshots=True)
    # the ROI facts of the ended webinar, looped back as the worker consumes them: the livepulse_roi_* series
    facts = [RawRecord(settings.topic_roi_facts, partition_for(key, 1), i, key, value)
             for i, (key, value) in enumerate(out.roi_facts)]
    assert facts, "the webinar ended without ROI facts"
    proc.process(facts, wall)
    lag.read(settings.topic_interactions, wall)
    text = exposition(proc, sizes, lag, ownership=Ownership(), standard=True).decode()
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
    # (the Watchdog always fires: it has no quiet case)
    untested = [name for name in alerts() if name not in firing or (name not in quiet and name != WATCHDOG)]
    assert not untested, f"alerts without a firing and a not-firing test case: {untested}"


@needs_promtool
def test_shortened_rules_are_valid(tmp_path):
    """What the end-to-end test does to the drop-off and stall alerts (durations only) still gives valid rules."""
    from tests.e2e.test_dashboards_and_alerts import shortened_rules

    groups = shortened_rules()
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
    assert documented == {"DROP_RATIO": "0.25", "DROP_MIN_LOSS": "10", "DROP_MIN_AUDIENCE": "20",
                          "DROP_LOOKBACK": "10m", "DROP_HOLD": "1m", "DROP_WIND_DOWN": "300"}, documented
    rule = alerts()[DROP_ALERT]
    expr = " ".join(rule["expr"].split())
    assert rule["for"] == "1m"
    assert "[10m]" in expr and not re.search(r"\[(?!10m\])[^\]]*\]", expr), "the only range must be [10m]"
    assert ">= 0.25" in expr and "[10m]) >= 20" in expr and "- 300" in expr, expr
    assert "event_id:livepulse_attendees_current:max >= 10" in expr, "the absolute loss floor"
    assert "event_id:livepulse_event_end_timestamp_seconds:max" in expr, "ended events must not alert"
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
        if labels.get("notify") not in NOTIFY:
            problems.append(f"{name}: notify {labels.get('notify')!r} not in {sorted(NOTIFY)}")
        if (labels.get("notify") == "organizer") != (name in AUDIENCE_ALERTS):
            problems.append(f"{name}: only the audience alerts {sorted(AUDIENCE_ALERTS)} go to the organiser")
        if name in AUDIENCE_ALERTS:
            if "group_left (organizer_id) event_id_organizer_id:livepulse_event_info:max" not in rule["expr"]:
                problems.append(f"{name}: an audience alert without the event's organizer_id (its route)")
            if labels.get("job") != "livepulse":
                problems.append(f"{name}: without job=livepulse the stall inhibition (equal: [job]) misses it")
            if labels.get("severity") == "page":
                problems.append(f"{name}: an audience alert pages")
        dashboard = GRAFANA_URL.fullmatch(notes.get("dashboard_url", ""))
        if name != WATCHDOG and not dashboard:
            problems.append(f"{name}: dashboard_url {notes.get('dashboard_url')!r} is not <grafana>/d/<uid>/<slug>")
        elif dashboard and not (ROOT / "grafana" / "dashboards" / f"{dashboard.group(2).split('/')[2]}.json").exists():
            problems.append(f"{name}: dashboard_url names no committed dashboard: {dashboard.group(2)}")
        elif dashboard and name in AUDIENCE_ALERTS and dashboard.group(3) != (
                "?var-organizer_id={{ $labels.organizer_id | urlquery }}&var-event_id={{ $labels.event_id | urlquery }}"):
            problems.append(f"{name}: dashboard_url does not select the alert's event: {dashboard.group(3)}")
        for key in ("summary", "description", "runbook_url"):
            if not str(notes.get(key, "")).strip():
                problems.append(f"{name}: no {key}")
        description = notes.get("description", "")
        if "event_id" in fired_labels().get(name, set()) and "$labels.event_id" not in description:
            problems.append(f"{name}: an event alert whose description does not name the event")
        if not re.search(r"\$value|\$labels\.\w+", description):
            problems.append(f"{name}: description without $value/$labels")
        match = RUNBOOK_URL.fullmatch(notes.get("runbook_url", ""))
        if not match:
            problems.append(f"{name}: runbook_url {notes.get('runbook_url')!r} is not <base>/deploy/RUNBOOK.md#<anchor>")
        elif match.group(2) not in anchors:
            problems.append(f"{name}: anchor #{match.group(2)} is not a heading of {RUNBOOK.name}")
        elif match.group(2) != name.lower():
            problems.append(f"{name}: runbook_url points at #{match.group(2)}, not at its own section")
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
        if not re.match(r"max by \(event_id(?:, \w+)*\) \(", expr):
            problems.append(f"{what}: reads event series {sorted(used & per_event)} without max by (event_id)")
        for agg, grouping in re.findall(r"\b(sum|count|avg|min|max)\s+by\s*\(([^)]*)\)", expr):
            keys = {k.strip() for k in grouping.split(",")}
            if agg != "max" and "instance" not in keys:
                problems.append(f"{what}: {agg} by ({grouping}) adds up workers")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------- alertmanager
def test_alertmanager_routes_by_audience_then_severity_and_groups_per_event():
    config = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"] for r in config["receivers"]}
    route = config["route"]
    assert {"alertname", "event_id"} <= set(route["group_by"]), route["group_by"]
    assert route["receiver"] in receivers
    by_notify = {}
    for child in route["routes"]:
        [matcher] = child["matchers"]
        notify = re.fullmatch(r'notify="(\w+)"', matcher).group(1)
        by_notify[notify] = child
    assert set(by_notify) == NOTIFY, by_notify
    organizer = by_notify["organizer"]
    assert {"organizer_id", "event_id"} <= set(organizer["group_by"]), "organisers: one notification per event"
    per_organizer = [m for r in organizer["routes"] for m in r["matchers"]]
    assert per_organizer and all(re.fullmatch(r'organizer_id="[^"]+"', m) for m in per_organizer), per_organizer
    routed = {}
    for child in by_notify["operator"]["routes"]:
        assert child["receiver"] in receivers, child
        for matcher in child["matchers"]:
            m = re.fullmatch(r'severity(=~|=)"([^"]+)"', matcher)
            if m:
                for severity in (m.group(2).split("|") if m.group(1) == "=~" else [m.group(2)]):
                    routed.setdefault(severity, []).append(child["receiver"])
    assert set(routed) == SEVERITIES - {"none"}, routed
    assert len({tuple(v) for v in routed.values()}) == len(routed), f"severities share receivers: {routed}"
    pager = {r for v in routed.values() for r in v if "pager" in r}
    organiser_receivers = {organizer["receiver"]} | {r["receiver"] for r in organizer["routes"]}
    assert pager and not pager & organiser_receivers, "audience alerts never reach the on-call pager"


def fired_labels() -> dict[str, set[str]]:
    """alertname -> the label names its firing alerts carry, as the promtool unit tests assert them."""
    found: dict[str, set[str]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            for alert in case.get("exp_alerts") or []:
                found.setdefault(case["alertname"], set()).update(alert["exp_labels"])
    return found


def test_inhibitions_are_scoped():
    """Each inhibition names existing alerts, compares labels both sides carry (else it never applies, or, for a
    label neither has, always does), and one worker's alert mutes only alerts of that same worker."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    names, carried = set(alerts()), fired_labels()
    pairs = set()
    for rule in config["inhibit_rules"]:
        sides = []
        for key in ("source_matchers", "target_matchers"):
            [matcher] = rule[key]
            m = re.fullmatch(r'alertname(=~|=)"([^"]+)"', matcher)
            assert m, f"inhibition matches on something else than alertname: {matcher}"
            side = set(m.group(2).split("|"))
            assert not side - names, f"inhibition names alerts that do not exist: {side - names}"
            sides.append(side)
        assert rule["equal"], f"an inhibition without `equal` silences everything: {rule}"
        for source in sides[0]:
            if "instance" in carried[source]:  # one worker's alert
                assert "instance" in rule["equal"], f"{source} would mute other workers' alerts: {rule}"
            for target in sides[1]:
                pairs.add((source, target))
                for name in (source, target):
                    missing = set(rule["equal"]) - carried[name]
                    assert not missing, f"{name} carries no {missing}: the inhibition {source} -> {target} is void"
    assert (STALL_ALERT, DROP_ALERT) in pairs and (STALL_ALERT, "LivePulseEngagementStalled") in pairs
    assert ("LivePulseAllWorkersDown", "LivePulseEventTimeLagHigh") in pairs
    assert not [p for p in pairs if p[0] == "LivePulseWorkerDown"], "one worker down mutes nothing of the others"


@needs_amtool
def test_amtool_check_config():
    result = run("amtool", "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout, output(result)


@needs_amtool
@pytest.mark.parametrize("labels, receivers", [
    (["notify=organizer", "severity=warning", f"alertname={DROP_ALERT}", "organizer_id=acme", "event_id=w1"],
     "organizer-acme"),
    (["notify=organizer", "severity=warning", f"alertname={DROP_ALERT}", "organizer_id=globex", "event_id=w1"],
     "organizer-globex"),
    (["notify=organizer", "severity=warning", "alertname=LivePulseEngagementStalled", "organizer_id=newcomer"],
     "organizers-inbox"),
    (["notify=operator", "severity=page", f"alertname={STALL_ALERT}"], "oncall-pager,team-chat"),
    (["notify=operator", "severity=warning", "alertname=LivePulseEventTimeLagHigh"], "team-chat"),
    (["notify=operator", "severity=ticket", "alertname=LivePulseInputsRejected"], "ticket-queue"),
    (["notify=deadmansswitch", "severity=none", f"alertname={WATCHDOG}"], "deadmansswitch"),
])
def test_amtool_routes_by_audience_and_severity(labels, receivers):
    result = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                 f"--verify.receivers={receivers}", *labels)
    assert result.returncode == 0, output(result)
