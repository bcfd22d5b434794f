"""Kafka stopped: 503 with Retry-After, nothing acknowledged. Kafka back: the senders' retries get through and
every record the gateway acknowledged is in the topic (read back)."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest

from streams.broker import EmbeddedBroker, free_port
from streams.kafka import ensure_topics
from tests.gateway.harness import GatewayProcess
from tests.integration.harness import Pipeline, consume

pytestmark = pytest.mark.integration


def test_broker_outage_gives_503_and_every_acknowledged_record_arrives_after_the_restart(tmp_path):
    port = free_port()
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log").start()
    pipe = Pipeline(broker.url, tmp_path, partitions=2)
    gw = GatewayProcess(pipe, ack_timeout_s="1", retry_after_s="1").start()
    acked: dict[int, float] = {}  # batch -> when it was acknowledged
    answers: list[tuple[int, int, str | None]] = []
    stop = threading.Event()
    go = threading.Event()  # cleared while the broker restarts and gets its topics back
    go.set()

    def batch(n: int) -> list[dict]:
        now = int(time.time() * 1000)
        return [{"id": f"b{n}-{i}", "event_id": f"outage-{i % 3}", "attendee_id": f"a{i}", "type": "heartbeat",
                 "ts": now} for i in range(10)]

    def sender() -> None:  # a well-behaved client: resends a batch after Retry-After until it is acknowledged
        n = 0
        while not stop.is_set():
            records = batch(n)
            while not stop.is_set():
                go.wait()
                try:
                    status, headers, _ = gw.post_api("/v1/interactions", records)
                except OSError:
                    time.sleep(0.2)
                    continue
                answers.append((n, status, headers.get("retry-after")))
                if status == 200:
                    acked[n] = time.monotonic()
                    break
                time.sleep(float(headers.get("retry-after", "1")))
            n += 1
            time.sleep(0.05)

    try:
        gw.wait_ready()
        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while len(acked) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(acked) >= 5
        broker.stop()
        stopped_at = time.monotonic()
        deadline = time.monotonic() + 30
        while not any(s == 503 for _, s, _ in answers) and time.monotonic() < deadline:
            time.sleep(0.1)
        refused = [(n, s, r) for n, s, r in answers if s == 503]
        assert refused, answers[-5:]
        assert all(r == "1" for _, _, r in refused), "a 503 says when to retry"
        status, _, health = gw.request("GET", "/health")
        assert status == 503 and health["reason"] == "broker_unavailable"
        time.sleep(3)
        assert not [n for n, t in acked.items() if t > stopped_at + 0.5], "nothing acknowledged while Kafka is down"
        # A real Kafka keeps its topics across a restart; the in-memory embedded one comes back empty and would
        # acknowledge records for a missing topic without keeping them. So the sender pauses while the restarted
        # broker gets its topics back (as a durable broker would have them), then resumes its retries.
        go.clear()
        time.sleep(1.5)  # a request already sent ends (503) before the restart
        assert not [n for n, t in acked.items() if t > stopped_at + 0.5], "nothing acknowledged while Kafka is down"
        broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log").start()
        asyncio.run(ensure_topics(pipe.settings, {pipe.settings.topic_interactions: pipe.partitions}))
        restarted_at = time.monotonic()
        # without any traffic, /health finds Kafka back (a load balancer sends nothing to an unhealthy gateway)
        deadline = time.monotonic() + 30
        while gw.request("GET", "/health")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert gw.request("GET", "/health")[0] == 200
        go.set()
        deadline = time.monotonic() + 60
        while len([t for t in acked.values() if t > restarted_at]) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        thread.join(30)
        after = sorted(n for n, t in acked.items() if t > restarted_at)
        assert len(after) >= 5, gw.log_tail()
        assert refused[0][0] in after, "the batch refused during the outage got through once Kafka was back"
        # The embedded broker keeps topics in memory: what it had before the stop is gone with it, so only the
        # batches acknowledged by the restarted broker can be read back -- all of them.
        topic = pipe.settings.topic_interactions
        wanted = {f"b{n}-{i}" for n in after for i in range(10)}

        def complete(received):
            return wanted <= {orjson.loads(v)["id"] for _, v in received[topic]}

        got = asyncio.run(consume(broker.url, [topic], until=complete, timeout=60))
        assert wanted <= {orjson.loads(v)["id"] for _, v in got[topic]}
        assert gw.request("GET", "/health")[0] == 200
    finally:
        stop.set()
        go.set()
        gw.stop()
        broker.stop()
