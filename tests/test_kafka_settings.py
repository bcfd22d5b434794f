"""Settings -> aiokafka arguments: TLS/SASL wiring, and secrets that never show up in logs."""

from __future__ import annotations

import logging
import ssl

import pytest

from streams.kafka import client_kwargs, describe
from streams.settings import Settings

SECRET = "s3cr3t-do-not-log"


def test_plaintext_by_default() -> None:
    kwargs = client_kwargs(Settings(broker="kafka://a:9092,kafka://b:9093"))
    assert kwargs == {"bootstrap_servers": ["a:9092", "b:9093"], "security_protocol": "PLAINTEXT"}


def test_scram_over_tls_with_password_file(tmp_path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")
    settings = Settings(
        broker="kafka://k:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="livepulse", sasl_password_file=secret_file,
    )  # fmt: skip
    kwargs = client_kwargs(settings)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "livepulse"
    assert kwargs["sasl_plain_password"] == SECRET  # file content, trailing newline stripped
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert describe(settings) == "k:9093 (SASL_SSL/SCRAM-SHA-512)"


def test_password_from_env_is_not_in_repr_or_logs(monkeypatch, caplog) -> None:
    monkeypatch.setenv("LIVEPULSE_SASL_PASSWORD", SECRET)
    settings = Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u")
    assert client_kwargs(settings)["sasl_plain_password"] == SECRET
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("settings %r at %s", settings, describe(settings))
    assert SECRET not in caplog.text and SECRET not in repr(settings)


def test_sasl_without_password_is_a_clear_error(tmp_path) -> None:
    settings = Settings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u")
    with pytest.raises(ValueError, match="needs sasl_mechanism, sasl_username and sasl_password"):
        client_kwargs(settings)
    missing = Settings(
        security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u",
        sasl_password_file=tmp_path / "nope",
    )  # fmt: skip
    with pytest.raises(ValueError, match="cannot read sasl_password_file"):
        client_kwargs(missing)


def test_the_worker_consumer_gets_the_short_fetch_wait() -> None:
    """Faust builds its consumer with a 1,500 ms fetch wait; the worker's must use LIVEPULSE_FETCH_MAX_WAIT_MS
    (busy partitions wait behind a fetch the broker holds for quiet ones: consumer_fixes.shorter_fetch_wait)."""
    import asyncio

    from streams.app import build_app

    async def built() -> int:
        app, _ = build_app(Settings(fetch_max_wait_ms=30), 4)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # built, never started
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(built()) == 30
