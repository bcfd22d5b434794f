"""Settings come from the environment and from the one env file LIVEPULSE_ENV_FILE names -- never from a `.env`
that happens to lie in the working directory (in the image that is the data volume, writable by the worker)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streams.settings import ENV_FILE_VAR, Settings


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_FILE_VAR, raising=False)
    monkeypatch.delenv("LIVEPULSE_APP_ID", raising=False)
    (tmp_path / ".env").write_text("LIVEPULSE_APP_ID=planted\nLIVEPULSE_BROKER=kafka://attacker:9092\n")
    return tmp_path


def test_a_dotenv_in_the_working_directory_is_not_read(in_tmp):
    settings = Settings()
    assert settings.app_id == "livepulse" and settings.broker == "kafka://localhost:9092"


def test_the_named_env_file_is_read_and_the_environment_wins(in_tmp, monkeypatch):
    named = in_tmp / "conf" / "livepulse.env"
    named.parent.mkdir()
    named.write_text("LIVEPULSE_APP_ID=from-file\nLIVEPULSE_PARTITIONS=3\n")
    monkeypatch.setenv(ENV_FILE_VAR, str(named))
    assert (Settings().app_id, Settings().partitions) == ("from-file", 3)
    monkeypatch.setenv("LIVEPULSE_PARTITIONS", "5")
    assert Settings().partitions == 5


def test_a_named_env_file_that_does_not_exist_is_an_error(in_tmp, monkeypatch):
    monkeypatch.setenv(ENV_FILE_VAR, str(in_tmp / "missing.env"))
    with pytest.raises(ValueError, match="LIVEPULSE_ENV_FILE=.*missing.env: no such file"):
        Settings()


def test_the_cli_ignores_a_planted_dotenv(in_tmp):
    """The real entry point, run where a `.env` lies: what `livepulse` would connect to."""
    code = "from streams.settings import Settings; print(Settings().broker)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEPULSE_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=in_tmp, env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "kafka://localhost:9092"


def test_the_cli_says_in_one_line_that_the_named_env_file_is_missing(in_tmp):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LIVEPULSE_")},
           ENV_FILE_VAR: str(in_tmp / "missing.env")}
    out = subprocess.run([sys.executable, "-m", "streams", "worker"], cwd=in_tmp, env=env, capture_output=True,
                         text=True, check=False, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == f"Error: {ENV_FILE_VAR}={in_tmp / 'missing.env'}: no such file"
