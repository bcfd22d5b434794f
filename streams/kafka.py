"""aiokafka plumbing shared by the worker, the simulator, the demo and the tests.

One place turns Settings into client keyword arguments (so TLS/SASL is configured the same
everywhere and secrets never reach a log line), creates topics, and waits for a broker that
is still starting instead of crashing.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context

from streams.settings import Settings

log = logging.getLogger(__name__)

# Metadata errors that mean "just created, not settled yet" on real Kafka clusters.
_RETRIABLE_METADATA = {3, 5}  # UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE


class KafkaUnavailable(RuntimeError):
    """No broker answered within the allowed time."""


class KafkaAuthError(KafkaUnavailable):
    """The broker answered but refused our TLS or SASL credentials: waiting will not fix it."""


# SASL answers that mean "these credentials are wrong" (aiokafka's bootstrap logs them and retries forever).
_SASL_REFUSED = (kafka_errors.SaslAuthenticationFailed, kafka_errors.UnsupportedSaslMechanismError,
                 kafka_errors.IllegalSaslStateError, kafka_errors.AuthenticationFailedError)


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin).

    The result holds the SASL password: pass it to aiokafka, never log it (log `describe()`).
    """
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL_"):
        try:
            password = settings.sasl_password_value()
        except OSError as exc:  # a missing mounted secret: say which file, not what is in it
            raise ValueError(f"cannot read sasl_password_file {settings.sasl_password_file}: {exc.strerror}") from None
        if not (settings.sasl_mechanism and settings.sasl_username and password):
            raise ValueError(
                f"security_protocol {settings.security_protocol} needs sasl_mechanism, sasl_username "
                "and sasl_password or sasl_password_file"
            )
        # aiokafka takes the user/password of SCRAM through the same two arguments as PLAIN.
        kwargs.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=password,
        )
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl_context(settings)
    return kwargs


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS context verifying the brokers (system CAs unless ssl_cafile), with an optional client cert."""
    return create_ssl_context(
        cafile=settings.ssl_cafile,
        certfile=settings.ssl_certfile,
        keyfile=settings.ssl_keyfile,
    )


def describe(settings: Settings) -> str:
    """Where and how we connect, safe to log (no secrets)."""
    how = settings.security_protocol
    if settings.security_protocol.startswith("SASL_") and settings.sasl_mechanism:
        how += f"/{settings.sasl_mechanism}"
    return f"{','.join(settings.bootstrap_servers)} ({how})"


async def ensure_topics(
    settings: Settings,
    topics: Mapping[str, int],
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, int]:
    """Create the missing topics and return the partition count each topic really has.

    Existing topics keep their partitions and configs (an operator may have made a 6-partition
    topic on purpose). Pass every config a client may later read back (e.g. cleanup.policy,
    retention.ms): tansu's DescribeConfigs returns only configs given at creation.
    Creating before describing matters: a metadata request for a missing topic auto-creates it
    (tansu, and Kafka with auto.create.topics.enable) with the default partition count.
    """
    configs = configs or {}
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        new = [
            NewTopic(name, partitions, settings.replication_factor, topic_configs=dict(configs.get(name, {})))
            for name, partitions in topics.items()
        ]
        response = await admin.create_topics(new)
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            message = entry[2] if len(entry) > 2 else None
            if code == 0:
                log.info("created topic %s with %d partitions", name, topics[name])
            elif code != TopicAlreadyExistsError.errno:
                raise for_code(code)(f"creating topic {name}: {message or f'error code {code}'}")
        actual = await _partition_counts(admin, list(topics))
    finally:
        await admin.close()
    for name, wanted in topics.items():
        if actual[name] != wanted:
            log.info("topic %s already exists with %d partitions (not %d); keeping it", name, actual[name], wanted)
    return actual


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str], attempts: int = 20) -> dict[str, int]:
    for attempt in range(attempts):
        meta = {t["topic"]: t for t in await admin.describe_topics(names)}
        pending = [n for n in names if meta[n]["error_code"] in _RETRIABLE_METADATA or not meta[n]["partitions"]]
        failed = [n for n in names if n not in pending and meta[n]["error_code"]]
        if failed:
            code = meta[failed[0]]["error_code"]
            raise for_code(code)(f"describing topic {failed[0]}: error code {code}")
        if not pending:
            return {n: len(meta[n]["partitions"]) for n in names}
        await asyncio.sleep(0.25)
    raise KafkaUnavailable(f"topics {pending} still have no partition metadata after {attempts} attempts")


async def probe(settings: Settings, timeout: float = 5.0) -> None:
    """One readiness check: some bootstrap server accepts TCP and answers a Kafka metadata request.

    The TCP check first keeps a refused connection a one-line error (aiokafka logs every failed
    bootstrap at ERROR level and hides the cause from its exception).
    """
    errors = []
    for server in settings.bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout)
        except (TimeoutError, OSError) as exc:
            errors.append(f"{server}: {exc or 'connect timed out'}")
            continue
        writer.close()
        if settings.security_protocol != "PLAINTEXT":
            await _check_credentials(settings, server, host.strip("[]"), int(port), timeout)
        break
    else:
        raise KafkaUnavailable("; ".join(errors))
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
    finally:
        await admin.close()


async def _check_credentials(settings: Settings, server: str, host: str, port: int, timeout: float) -> None:
    """One connection with the TLS/SASL settings; raise KafkaAuthError when the broker refuses them.

    aiokafka's clients treat a refused handshake like an unreachable broker (log, retry), which would keep a
    worker with a wrong password or CA waiting until startup_wait_s. The message names the user and mechanism,
    never the password.
    """
    kwargs = client_kwargs(settings)
    who = f"user {settings.sasl_username!r} ({settings.sasl_mechanism})" if "sasl_mechanism" in kwargs else ""
    try:
        conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=int(timeout * 1000), **{
            k: v for k, v in kwargs.items() if k != "bootstrap_servers"}), timeout)
    except ssl.SSLCertVerificationError as exc:
        raise KafkaAuthError(f"TLS: the certificate of Kafka at {server} was not accepted ({exc.verify_message}); "
                             "check ssl_cafile") from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        raise  # the broker closed the connection: maybe still starting, retry
    except ssl.SSLError as exc:
        raise KafkaAuthError(f"TLS handshake with Kafka at {server} failed ({exc.reason or exc}); "
                             "is it a TLS listener, and are ssl_certfile/ssl_keyfile right?") from None
    except _SASL_REFUSED as exc:
        raise KafkaAuthError(f"Kafka at {server} refused SASL authentication as {who}: "
                             f"{type(exc).__name__}: {exc}") from None
    except (KeyError, ValueError) as exc:
        if not who:
            raise
        # aiokafka's SCRAM client fails this way when the server's final message is an error (e.g. unknown user)
        raise KafkaAuthError(f"Kafka at {server} refused SASL authentication as {who}: the SCRAM exchange failed "
                             f"({type(exc).__name__}: {exc}); wrong user name or password?") from None
    conn.close()


async def wait_for_broker(settings: Settings, timeout: float = 60.0, log_every: float = 5.0) -> None:
    """Wait until the broker answers, logging why not every few seconds; raise KafkaUnavailable at timeout.

    Workers start next to their broker (compose, systemd, the demo): the broker being a few seconds
    late is normal and must not crash them.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    where = describe(settings)
    last_log = float("-inf")
    while True:
        try:
            await probe(settings, timeout=max(0.5, min(5.0, deadline - loop.time())))
            return
        except (ValueError, ssl.SSLError, KafkaAuthError):
            raise  # misconfiguration: waiting will not fix it
        except Exception as exc:  # noqa: BLE001 - any failure to answer is "not ready yet"
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        now = loop.time()
        if now >= deadline:
            raise KafkaUnavailable(f"Kafka at {where} did not answer within {timeout:g} s: {error}")
        if now - last_log >= log_every:
            log.warning("waiting for Kafka at %s: %s", where, error)
            last_log = now
        await asyncio.sleep(min(1.0, max(0.0, deadline - now)))


async def end_offsets(settings: Settings, listed: Mapping[tuple[str, int], int],
                      timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """The true end offset (next offset to be written) of each partition, given the ListOffsets answer.

    tansu (the embedded broker) answers ListOffsets(latest) with the base offset of the last record
    batch + 1, not the offset after its last record; a Fetch response carries the right high watermark.
    So fetch once from the listed offset - 1 and take the larger of the two. On Apache Kafka both agree.
    """
    result = dict(listed)
    probe_from = {tp: off - 1 for tp, off in listed.items() if off and off > 0}
    if not probe_from:
        return result
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = {tp: TopicPartition(*tp) for tp in probe_from}
        consumer.assign(list(tps.values()))
        for tp, start in probe_from.items():
            consumer.seek(tps[tp], start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = set(tps)
        while pending and loop.time() < deadline:
            await consumer.getmany(timeout_ms=200, max_records=1)
            for tp in list(pending):
                high = consumer.highwater(tps[tp])
                if high is not None:
                    result[tp] = max(result[tp], high)
                    pending.discard(tp)
        if pending:
            log.warning("no fetch high watermark for %s within %g s; using ListOffsets", sorted(pending), timeout)
    finally:
        await consumer.stop()
    return result
