"""The README is the operator's manual: it must match the code it describes."""

from __future__ import annotations

import re
from pathlib import Path

from streams.app import input_topics
from streams.outputs.metrics import BatchSizes, ConsumerLag, exposition
from streams.outputs.snapshots import SnapshotPacing
from streams.processor import Processor
from streams.settings import LeadGrades, ScoreWeights, Settings
from streams.testing import raw

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    first_block = re.search(r"```sh\n(.*?)```", README, re.DOTALL).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    assert re.search(r"^make test$", (ROOT / ".ci/run").read_text(), re.MULTILINE)


def test_every_setting_is_documented():
    """Every setting in README's table, but the gateway's, which docs/gateway.md documents."""
    names = [f"LIVEPULSE_{n.upper()}" for n in Settings.model_fields if n not in ("score", "grade")]
    names += [f"LIVEPULSE_SCORE_{n.upper()}" for n in ScoreWeights.model_fields]
    names += [f"LIVEPULSE_GRADE_{n.upper()}" for n in LeadGrades.model_fields]
    gateway_doc = (ROOT / "docs" / "gateway.md").read_text()
    caps_doc = (ROOT / "docs" / "caps.md").read_text()
    missing = [n for n in names if f"`{n}`" not in (gateway_doc if n.startswith("LIVEPULSE_GATEWAY_")
                                                      else README + caps_doc)]
    assert not missing, f"settings missing from README or docs/caps.md (docs/gateway.md for the gateway's): {missing}"
    for name, text in (("README", README), ("docs/gateway.md", gateway_doc), ("docs/caps.md", caps_doc)):
        documented = set(re.findall(r"`(LIVEPULSE_[A-Z_]+)`", text))
        assert documented <= set(names), f"{name} documents unknown settings: {documented - set(names)}"


def test_caps_doc_shows_the_derived_defaults():
    from streams.settings import derived_caps

    caps_doc = (ROOT / "docs" / "caps.md").read_text()
    for name, value in derived_caps(Settings()).items():
        assert f"| `LIVEPULSE_{name.upper()}` | derived: `{value}` |" in caps_doc, name


def test_every_exported_metric_is_documented():
    t0 = 1_767_000_000_000
    records = [raw("livepulse.events", {"event_id": "e", "type": "started", "ts": t0}, offset=0)]
    records += [raw("livepulse.interactions", {"id": f"i{n}", "event_id": "e", "attendee_id": f"a{n % 3}",
                                               "type": t, "ts": t0 + n * 1000}, offset=n)
                for n, t in enumerate(["registration", "join", "chat", "leave", "join", "heartbeat"])]
    proc = Processor(Settings(), partitions=1)
    proc.process(records, t0 / 1000)
    proc.tick(t0 / 1000, snapshots=True)
    sizes, lag = BatchSizes(), ConsumerLag(input_topics(Settings()))  # what streams/app.py adds to the collector
    sizes.observe(len(records))
    pacing = SnapshotPacing(Settings().snapshot_interval_s, Settings().snapshot_max_share)
    names = set(re.findall(r"^# TYPE (\S+) ", exposition(proc, sizes, lag, pacing).decode(), re.MULTILINE))
    assert {"livepulse_attendees_current", "livepulse_batch_records", "livepulse_consumer_lag_records",
            "livepulse_snapshot_round_seconds"} <= names
    missing = [n for n in sorted(names) if n not in README]
    assert not missing, f"metrics missing from README: {missing}"
