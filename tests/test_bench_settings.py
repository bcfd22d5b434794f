"""`livepulse bench --worker-setting`: operator settings reach the bench's workers, checked as the worker would."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.bench.livepulse_run import Worker, worker_settings_env


def test_settings_become_the_workers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = worker_settings_env(["checkpoint_interval_s=1", "LIVEPULSE_SCORE_DWELL=30", "grade_a=80"])
    assert env == {"LIVEPULSE_CHECKPOINT_INTERVAL_S": "1", "LIVEPULSE_SCORE_DWELL": "30", "LIVEPULSE_GRADE_A": "80"}
    # The bench's own environment does not leak into its workers; what the operator asked for does.
    monkeypatch.setenv("LIVEPULSE_CHECKPOINT_INTERVAL_S", "7")
    monkeypatch.setenv("LIVEPULSE_MAX_EVENTS", "3")
    worker = Worker("kafka://127.0.0.1:1", "app", {}, Path("/tmp/x"), Path("/tmp/x.log"), extra_env=env)
    worker_env = worker.env()
    assert worker_env["LIVEPULSE_CHECKPOINT_INTERVAL_S"] == "1"
    assert worker_env["LIVEPULSE_SCORE_DWELL"] == "30"
    assert "LIVEPULSE_MAX_EVENTS" not in worker_env


@pytest.mark.parametrize(("pair", "message"), [
    ("checkpoint_interval_s", "expected NAME=VALUE"),
    ("no_such_setting=1", "no setting 'no_such_setting'"),
    ("broker=kafka://elsewhere:9092", "the bench sets broker itself"),
    ("snapshot_interval_s=5", "the bench sets snapshot_interval_s itself"),
    ("checkpoint_interval_s=soon", "valid number"),
    ("checkpoint_interval_s=600", "less than or equal to 60"),
    ("grade_a=200", "less than or equal to 100"),
])
def test_bad_settings_are_refused_with_the_reason(pair: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        worker_settings_env([pair])
