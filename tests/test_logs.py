"""Secrets never reach a log line (streams/logs.py): masked in messages and tracebacks, Kafka clients kept at INFO."""

from __future__ import annotations

import io
import logging

import pytest
from pydantic import SecretStr

from streams import logs
from streams.settings import Settings


@pytest.fixture
def captured():
    """A fresh handler on the root logger, and the record factory and levels restored afterwards."""
    factory = logging.getLogRecordFactory()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "aiokafka.conn", *logs.KAFKA_LOGGERS)}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)
    logging.setLogRecordFactory(factory)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_the_sasl_plain_token_as_aiokafka_logs_it_is_masked(captured):
    """aiokafka logs `Request ...: SaslAuthenticateRequest_v1(sasl_auth_bytes=b'user\\x00user\\x00password')`."""
    secret = "pä$$'wörd\\x"  # non-ASCII, a quote and a backslash: each repr escapes it differently
    logs.install_redaction([secret])
    token = f"livepulse\x00livepulse\x00{secret}".encode()  # RFC 4616, as aiokafka builds it
    log = logging.getLogger("aiokafka.conn")
    log.setLevel(logging.DEBUG)
    log.debug("Request to %s:%d %d: %s", "127.0.0.1", 9092, 3, f"SaslAuthenticateRequest(sasl_auth_bytes={token!r})")
    log.debug("str %r and plain %s", secret, secret)
    text = captured.getvalue()
    assert "SaslAuthenticateRequest" in text and "livepulse" in text  # the line is there ...
    assert text.count(logs.MASK) == 3
    for form in logs.forms(secret):  # ... without the password in any form
        assert form not in text
    assert repr(token) not in text


def test_a_traceback_holding_a_secret_is_masked(captured):
    logs.install_redaction(["s3cr3t-zoom-token"])
    try:
        raise ValueError("bad token s3cr3t-zoom-token")
    except ValueError:
        logging.getLogger("livepulse.gateway").exception("failed")
    text = captured.getvalue()
    assert "ValueError: bad token **********" in text and "s3cr3t" not in text


def test_lines_without_secrets_are_left_alone_and_redaction_is_not_stacked(captured):
    logs.install_redaction(["a-secret"])
    redactor = logs.install_redaction(["b-secret"])  # a second configure replaces the first, never wraps it
    assert not isinstance(redactor.factory, logs.Redactor)
    logging.getLogger("livepulse").warning("%d records, %s", 3, "a-secret b-secret")
    assert captured.getvalue() == "WARNING livepulse 3 records, a-secret **********\n"


def test_every_configured_secret_is_collected(tmp_path):
    (tmp_path / "pw").write_text("file-password\n")
    settings = Settings(sasl_password_file=tmp_path / "pw", gateway_id_hash_key=SecretStr("hash-key-0123456789"),
                        gateway_zoom_secret_tokens=[SecretStr("zoom-1"), SecretStr("zoom-2")])
    assert sorted(logs.secrets_of(settings)) == ["file-password", "hash-key-0123456789", "zoom-1", "zoom-2"]
    assert logs.secrets_of(Settings(sasl_password=SecretStr("env-password"))) == ["env-password"]
    assert logs.secrets_of(Settings()) == []


@pytest.mark.parametrize(("log_level", "kafka_log_level", "expected"), [
    ("debug", None, logging.INFO),  # LivePulse at debug, the Kafka client's request dump stays off
    ("info", None, logging.INFO),
    ("warning", None, logging.WARNING),
    ("debug", "debug", logging.DEBUG),  # asked for explicitly
    ("info", "error", logging.ERROR),
])
def test_kafka_client_loggers_stay_at_info_unless_asked(captured, log_level, kafka_log_level, expected):
    settings = Settings(log_level=log_level, kafka_log_level=kafka_log_level, sasl_password=SecretStr("pw-x1"))
    logs.configure(settings, "%(message)s")
    for name in logs.KAFKA_LOGGERS:
        assert logging.getLogger(name).level == expected
    assert logging.getLogger("aiokafka.conn").getEffectiveLevel() == expected
    logging.getLogger("aiokafka.conn").error("login with pw-x1")
    assert "login with **********" in captured.getvalue()
