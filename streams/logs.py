"""Logging of the worker and the gateway: no secret reaches a log line, at any level (docs/security.md).

Two layers. The Kafka client libraries log every request they send at DEBUG -- the SASL login included, whose
PLAIN token is `user\\x00user\\x00password` -- so their loggers stay at INFO unless `kafka_log_level` asks
otherwise, whatever the log level of LivePulse itself. And every log record, of any library, is scrubbed of the
configured secrets (SASL password, Zoom secret tokens, the id hash key) before any handler sees it, so even an
explicit DEBUG of the Kafka clients, a traceback or a library that prints its configuration shows `**********`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from streams.settings import Settings

# Loggers that log whole protocol requests and responses at DEBUG (aiokafka; faust's bundled kafka-python fork).
KAFKA_LOGGERS = ("aiokafka", "kafka")
MASK = "**********"


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the settings hold (the SASL password also when it comes from a file)."""
    try:
        password = settings.sasl_password_value()
    except OSError:  # an unreadable password file: the worker says so itself, with the path
        password = None
    values = [password, settings.gateway_id_hash_key.get_secret_value(),
              *(token.get_secret_value() for token in settings.gateway_zoom_secret_tokens)]
    return [v for v in values if v]


def forms(secret: str) -> set[str]:
    """The secret as it may appear in a log line: itself, inside a str repr, inside a bytes repr (aiokafka logs the
    SASL PLAIN token as bytes: non-ASCII characters become \\x escapes)."""
    return {f for f in (secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]) if f}


class Redactor:
    """A log record factory that replaces secrets in the message (and in the traceback text) with MASK.

    A factory, not a handler filter: it sees every record of every logger once, whatever handlers Faust or
    aiohttp install later, and costs nothing for records below the level (they are never created).
    """

    def __init__(self, secrets: Iterable[str], factory: Any) -> None:
        # longest first: a secret that contains another is masked whole
        self.forms = sorted({f for s in secrets for f in forms(s)}, key=len, reverse=True)
        self.factory = factory

    def scrub(self, text: str) -> str:
        for form in self.forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.factory(*args, **kwargs)
        if not self.forms:
            return record
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call: logging reports it itself when it formats the record
            return record
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.scrub(text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return record


def install_redaction(secrets: Iterable[str]) -> Redactor:
    """Scrub these secrets from every log record from now on (replacing an earlier Redactor of ours)."""
    factory = logging.getLogRecordFactory()
    while isinstance(factory, Redactor):
        factory = factory.factory
    redactor = Redactor(secrets, factory)
    logging.setLogRecordFactory(redactor)
    return redactor


def kafka_level(settings: Settings) -> int:
    """The level of the Kafka client loggers: kafka_log_level if set, else the log level but never below INFO."""
    if settings.kafka_log_level is not None:
        return logging.getLevelName(settings.kafka_log_level.upper())
    return max(logging.getLevelName(settings.log_level.upper()), logging.INFO)


def configure(settings: Settings, fmt: str) -> None:
    """The logging of a LivePulse process: root at log_level, the Kafka clients at kafka_level, secrets masked."""
    install_redaction(secrets_of(settings))
    logging.basicConfig(level=settings.log_level.upper(), format=fmt)
    for name in KAFKA_LOGGERS:
        logging.getLogger(name).setLevel(kafka_level(settings))
