"""Real worker processes against the real embedded broker: start, feed, read outputs, scrape /metrics.

Every test gets its own app id and topic names (through LIVEPULSE_* variables), so tests can share the
session broker without seeing each other's records.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streams.broker import free_port
from streams.settings import Settings

TOPIC_FIELDS = tuple(f for f in Settings.model_fields if f.startswith("topic_"))  # every topic, new ones included


@dataclass
class Pipeline:
    """The names and settings one test's workers share."""

    broker: str
    tmp: Path
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        run = uuid.uuid4().hex[:8]
        self.app_id = f"lp-test-{run}"
        self.topics = {f: f"t{run}.{Settings.model_fields[f].default}" for f in TOPIC_FIELDS}
        self.settings = Settings(broker=self.broker, app_id=self.app_id, partitions=self.partitions,
                                 **self.topics)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEPULSE_")}
        env.update({f"LIVEPULSE_{f.upper()}": name for f, name in self.topics.items()})
        env.update({
            "LIVEPULSE_BROKER": self.broker, "LIVEPULSE_APP_ID": self.app_id,
            "LIVEPULSE_PARTITIONS": str(self.partitions), "LIVEPULSE_SNAPSHOT_INTERVAL_S": "1",
            "LIVEPULSE_SESSION_TIMEOUT_S": "6", "LIVEPULSE_LOG_LEVEL": "info",
        })
        env.update(self.extra_env)
        return env


class WorkerProcess:
    """`livepulse worker` as a child process with its own web port, data dir and log file."""

    def __init__(self, pipeline: Pipeline, name: str = "w1") -> None:
        self.pipeline = pipeline
        self.name = name
        self.port = free_port()
        self.log_path = pipeline.tmp / f"worker-{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        env = self.pipeline.env()
        env["LIVEPULSE_WEB_PORT"] = str(self.port)
        env["LIVEPULSE_WEB_HOST"] = "127.0.0.1"
        env["LIVEPULSE_DATA_DIR"] = str(self.pipeline.tmp / f"data-{self.name}")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker {self.name} not healthy after {timeout} s:\n{self.log_tail()}")

    def metrics_text(self, names: Sequence[str] = ()) -> str:
        query = "?" + urllib.parse.urlencode([("name[]", n) for n in names]) if names else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics{query}", timeout=5) as r:
            return r.read().decode()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample as {(name, sorted labels): value}."""
        return parse_metrics(self.metrics_text())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def produce(broker: str, records: list[tuple[str, bytes | None, bytes | None]], *,
                  partition: int | None = None) -> None:
    """Send (topic, key, value) records in order and wait until all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.split("://", 1)[-1], acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, partition=partition) for topic, key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(broker: str, topics: list[str], *, until, timeout: float = 120.0) -> dict[str, list]:
    """Read the topics from the beginning until `until(received)` is true and every partition is read to its end;
    received[topic] = [(key, value)]."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=broker.split("://", 1)[-1],
                                auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
    await consumer.start()
    received: dict[str, list] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout
    try:
        while not until(received):
            if time.monotonic() > deadline:
                counts = {t: len(v) for t, v in received.items()}
                raise AssertionError(f"timed out after {timeout} s waiting for outputs; got {counts}")
            batches = await consumer.getmany(timeout_ms=500)
            for tp, msgs in batches.items():
                received[tp.topic].extend((m.key, m.value) for m in msgs)
        # `until` may hold before every topic is read (e.g. all summaries but not yet all their leads): read on
        # until each partition is at the high watermark the broker reported.
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for tp, msgs in batches.items():
                received[tp.topic].extend((m.key, m.value) for m in msgs)
            caught_up = True
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                caught_up = caught_up and high is not None and await consumer.position(tp) >= high
            if caught_up and not batches:
                break
    finally:
        await consumer.stop()
    return received


def decoded(values: list[tuple[bytes | None, bytes]]) -> list[dict]:
    return [orjson.loads(v) for _, v in values]


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
