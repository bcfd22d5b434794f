"""End to end with a real Prometheus: embedded broker + two real workers + Prometheus scraping them every second
with the committed rules, fed by the simulator with two live webinars at once -- one with a scripted mid-event
audience drop, one without (the control).

Proves what a screenshot cannot: the drop-off alert fires for the right event_id and never for the control, and
every query of the committed Grafana dashboards returns data for a simulated event -- the Marketing ROI dashboard's
too: both webinars belong to one organiser and cost 5000 EUR, and once they have ended a few CRM opportunities of
the drop's attendees (one of them won, in EUR) arrive on the opportunities topic, one minute after the end.

Time: the webinars play at SPEED x real time (a 20-minute webinar in about a minute), so the drop-off alert's
wall-clock durations are shortened the same way -- only the durations (`[10m]` lookback and `for: 1m` hold)
change, by plain text substitution; the expression, thresholds and labels are the committed ones. The
unshortened rules are unit-tested with `promtool test rules` (tests/deploy).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import orjson
import pytest
import yaml

from streams.simulate.produce import produce
from streams.simulate.scenario import ScenarioConfig, generate_many
from tests.e2e.prometheus import PrometheusServer, prometheus_binary
from tests.integration.harness import Pipeline, WorkerProcess, wait_until
from tests.integration.harness import produce as produce_records

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(prometheus_binary() is None,
                       reason="Debian's prometheus package is not installed (`make test` installs it as root)"),
]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "livepulse.rules.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
DROP_ALERT = "LivePulseAudienceDropOff"
SPEED = 20.0  # event time runs 20x faster than wall time
LOBBY_S = 60  # the webinars start one (event-time) minute after the simulation begins
DURATION_S = 1200
DROP, CONTROL = "e2e-drop", "e2e-control"
ORGANIZER = "e2e-marketing"
COST, CURRENCY, WON = 5000.0, "EUR", 8000.0


def shortened_rules() -> list[dict]:
    """The committed rule groups, with the drop-off alert's durations scaled to the simulation's speed."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    found = 0
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == DROP_ALERT:
                found += 1
                assert "[10m]" in rule["expr"] and rule.get("for") == "1m", "the e2e test shortens [10m] and 1m"
                rule["expr"] = rule["expr"].replace("[10m]", "[2m]")
                rule["for"] = "10s"
    assert found == 1, f"{DROP_ALERT} not found in {RULES}"
    return groups


def webinars(now_ms: int) -> list:
    """Two live webinars starting together: one loses half its audience at minute 7 of 20, the other does not.

    (The drop-off alert is quiet in the last 5 minutes before the scheduled end, when audiences leave anyway.)
    """
    common = {"registrants": 150, "duration_s": DURATION_S, "start": now_ms + LOBBY_S * 1000, "drop_at": 0.35,
              "malformed_rate": 0.01, "max_delay_s": 10.0, "cost": COST, "currency": CURRENCY,
              "extra": {"organizer_id": ORGANIZER}}
    return generate_many([ScenarioConfig(seed=11, event_id=DROP, drop_fraction=0.5, **common),
                          ScenarioConfig(seed=12, event_id=CONTROL, drop_fraction=0.0, **common)])


def opportunities(records: list, event_id: str, end_ms: int, topic: str) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) of three CRM opportunities of attendees who joined `event_id`, created one minute after
    its end (inside the 30-day attribution window): one only created, one qualified, one won in the event's
    currency."""
    joined: list[str] = []
    for rec in records:
        if rec.topic != "interactions" or rec.key != event_id.encode():
            continue
        try:
            value = orjson.loads(rec.value)
        except orjson.JSONDecodeError:
            continue  # one of the deliberately malformed records
        if value.get("type") == "join" and value.get("attendee_id") and value["attendee_id"] not in joined:
            joined.append(value["attendee_id"])
    assert len(joined) >= 3, f"only {len(joined)} attendees joined {event_id}"
    ts = end_ms + 60_000
    stages = [("created", 12_000.0), ("qualified", 20_000.0), ("won", WON)]
    return [(topic, ORGANIZER.encode(),
             orjson.dumps({"opportunity_id": f"{event_id}-opp{n}", "organizer_id": ORGANIZER, "attendee_id": aid,
                           "amount": amount, "currency": CURRENCY, "stage": stage, "ts": ts}))
            for n, (aid, (stage, amount)) in enumerate(zip(joined, stages))]


def substitute(expr: str, event_id: str) -> str:
    """What Grafana would send for the dashboard's variables."""
    return (expr.replace("${event_id}", event_id).replace("$event_id", event_id)
            .replace("${organizer_id}", ORGANIZER).replace("$organizer_id", ORGANIZER)
            .replace("${__rate_interval}", "1m").replace("$__rate_interval", "1m")
            .replace("${__range}", "1h").replace("$__range", "1h")
            .replace("${instance}", ".*").replace("$instance", ".*"))


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel or annotation title, expression) of every query in the committed dashboards."""
    from grafana.dashboards import all_queries

    found = []
    for path in DASHBOARDS:
        dashboard = orjson.loads(path.read_bytes())
        found += [(path.stem, title, expr) for title, expr in all_queries(dashboard)]
    return found


@pytest.fixture
def stack(broker, tmp_path):
    pipe = Pipeline(broker, tmp_path, partitions=4, extra_env={
        "LIVEPULSE_STORE": "memory", "LIVEPULSE_ALLOWED_LATENESS_S": "15"})
    workers = [WorkerProcess(pipe, f"w{i}").start() for i in (1, 2)]
    prom = None
    try:
        for w in workers:
            w.wait_ready()
        prom = PrometheusServer(tmp_path, [f"127.0.0.1:{w.port}" for w in workers], shortened_rules()).start()
        wait_until(lambda: prom.targets_up() == 2, timeout=30, what="both workers scraped")
        yield pipe, workers, prom
    finally:
        if prom is not None:
            prom.stop()
        for w in workers:
            w.stop()


def test_drop_off_alert_fires_for_the_drop_only_and_every_panel_has_data(stack):
    pipe, _, prom = stack
    now_ms = int(time.time() * 1000)
    records = webinars(now_ms)
    errors: list[BaseException] = []

    def play() -> None:
        try:
            asyncio.run(produce(records, pipe.settings, speed=SPEED, anchor_ms=now_ms, anchor_is_wall=True,
                                progress=None))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    player = threading.Thread(target=play, daemon=True)
    player.start()

    # Watch the alerts every second while the webinars play: the control must never even be pending.
    fired = None
    control_alerts: list[dict] = []
    deadline = time.monotonic() + (LOBBY_S + 1200) / SPEED + 60
    while time.monotonic() < deadline and fired is None:
        for alert in prom.alerts():
            if alert["labels"].get("alertname") != DROP_ALERT:
                continue
            if alert["labels"].get("event_id") == CONTROL:
                control_alerts.append(alert)
            elif alert["labels"].get("event_id") == DROP and alert["state"] == "firing":
                fired = alert
        assert not errors, errors
        time.sleep(1)
    assert fired is not None, f"{DROP_ALERT} never fired for {DROP}; alerts: {prom.alerts()}"
    assert fired["annotations"].get("summary") and DROP in fired["annotations"].get("description", "")
    # The alert fired during the drop's aftermath (event time), well before the end of the webinar.
    clock = prom.query(f'max(livepulse_event_clock_timestamp_seconds{{event_id="{DROP}"}})')
    minute = (float(clock[0]["value"][1]) * 1000 - (now_ms + LOBBY_S * 1000)) / 60_000
    assert 7 <= minute < 15, f"fired at event minute {minute:.1f}; the drop is at minute 7"

    # Let both webinars finish (their end annotations need the `ended` record), watching the control still.
    player.join(timeout=(LOBBY_S + 1200) / SPEED + 120)
    assert not player.is_alive() and not errors, errors
    def events_ended() -> int:
        result = prom.query('count(livepulse_event_end_timestamp_seconds{event_id=~"e2e-.*"})')
        return int(float(result[0]["value"][1])) if result else 0

    wait_until(lambda: events_ended() == 2, timeout=60, what="both events ended in Prometheus")
    control_alerts += [a for a in prom.alerts()
                       if a["labels"].get("alertname") == DROP_ALERT and a["labels"].get("event_id") == CONTROL]
    history = prom.query(f'count_over_time(ALERTS{{alertname="{DROP_ALERT}",event_id="{CONTROL}"}}[10m])')
    assert not control_alerts and not history, f"the control webinar alerted: {control_alerts or history}"

    # The CRM reports opportunities of the drop's attendees after the webinar; the ROI ledger attributes them.
    end_ms = now_ms + (LOBBY_S + DURATION_S) * 1000
    asyncio.run(produce_records(pipe.broker, opportunities(records, DROP, end_ms, pipe.settings.topic_opportunities)))
    roi = f'job="livepulse", organizer_id="{ORGANIZER}", event_id="{DROP}"'
    wait_until(lambda: prom.query(f"max(livepulse_roi_won_amount{{{roi}}})"), timeout=30,
               what="the won opportunity attributed to the drop event in Prometheus")

    # Every panel, annotation and variable query of the committed dashboards returns data for the drop event.
    queries = dashboard_queries()
    assert len(queries) >= 20, f"only {len(queries)} dashboard queries found in {DASHBOARDS}"
    assert "livepulse-marketing-roi" in {dashboard for dashboard, _, _ in queries}
    empty = []
    for dashboard, title, expr in queries:
        if not prom.query(substitute(expr, DROP)):
            empty.append(f"{dashboard} / {title}: {expr}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

    # ... and the ROI figures are the attributed ones: 3 opportunities, 8000 EUR won against a cost of 5000 EUR.
    def figure(metric: str, extra: str = "") -> float:
        [sample] = prom.query(f"max by (event_id) ({metric}{{{roi}{extra}}})")
        return float(sample["value"][1])

    assert figure("livepulse_roi_opportunities") == pytest.approx(3)
    assert figure("livepulse_roi_won_amount", f', currency="{CURRENCY}"') == pytest.approx(WON)
    assert figure("livepulse_roi_pipeline_amount", f', currency="{CURRENCY}"') == pytest.approx(12_000 + 20_000 + WON)
    assert figure("livepulse_roi_ratio") == pytest.approx((WON - COST) / COST)
