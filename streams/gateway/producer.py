"""Records to Kafka with acks=all, answered only once acknowledged, with a bounded amount in flight.

The gateway holds no queue of its own: a request's records are sent at once and the request waits for their
acknowledgement. What may wait is bounded in requests and bytes; beyond that, and whenever Kafka does not
acknowledge within `gateway_ack_timeout_s`, the request fails with `Unavailable` (503 + Retry-After) and the
sender keeps its data. Records of a failed request may still arrive later (a send cannot be taken back); resent
interactions carry the same ids and the worker drops the duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams import kafka
from streams.gateway.metrics import GatewayMetrics
from streams.settings import Settings

log = logging.getLogger("livepulse.gateway")

Record = tuple[str, bytes, bytes]  # topic, key, value
HEALTH_INTERVAL_S = 3.0


class Unavailable(Exception):
    """Kafka cannot take the records now: `reason` is broker_unavailable, ack_timeout or overloaded."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


class Producer:
    """One aiokafka producer for the whole gateway, connected in the background (the gateway starts, and answers
    503, while Kafka is still down)."""

    def __init__(self, settings: Settings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._producer: AIOKafkaProducer | None = None
        self._connect_task: asyncio.Task | None = None
        self._watch_task: asyncio.Task | None = None
        self._bytes = 0
        self._requests = 0
        self.last_error = "not connected yet"
        self.healthy = False

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        self._connect_task = asyncio.create_task(self._connect(), name="gateway-kafka-connect")

    async def stop(self) -> None:
        for task in (self._connect_task, self._watch_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def _connect(self) -> None:
        s = self.settings
        topics = {s.topic_interactions: s.partitions, s.topic_events: s.partitions, s.topic_opportunities: s.partitions}
        while True:
            producer = None
            try:
                await kafka.probe(s, timeout=3.0)
                # The input topics with LivePulse's partition count (a metadata request would auto-create them
                # with the broker's default count on tansu or a permissive Kafka).
                await kafka.ensure_topics(s, topics)
                producer = AIOKafkaProducer(
                    **kafka.client_kwargs(s), acks="all", linger_ms=1, max_batch_size=256 * 1024,
                    max_request_size=max(1_048_576, s.max_record_bytes * 2),
                    request_timeout_ms=30_000, retry_backoff_ms=100,
                )
                await producer.start()
            except asyncio.CancelledError:
                if producer is not None:
                    await producer.stop()
                raise
            except Exception as exc:  # noqa: BLE001 - any failure to connect: wait and try again
                self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.warning("gateway: Kafka at %s not available yet: %s", kafka.describe(s), self.last_error)
                if producer is not None:
                    await producer.stop()
                await asyncio.sleep(1.0)
                continue
            self._producer = producer
            self._up(True)
            log.info("gateway: producing to Kafka at %s", kafka.describe(s))
            self._watch_task = asyncio.create_task(self._watch(producer), name="gateway-kafka-watch")
            return

    async def _watch(self, producer: AIOKafkaProducer) -> None:
        """Ask Kafka for its metadata every few seconds: /health follows Kafka also without traffic (a gateway taken
        out of a load balancer by a failed send gets no traffic to find out that Kafka is back)."""
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            try:
                await asyncio.wait_for(producer.client.fetch_all_metadata(), HEALTH_INTERVAL_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure to answer is "unavailable"
                if self.healthy:
                    log.warning("gateway: Kafka does not answer: %s", type(exc).__name__)
                self.last_error = f"no metadata from Kafka ({type(exc).__name__})"
                self._up(False)
            else:
                self._up(True)

    async def send(self, records: Sequence[Record]) -> None:
        """Send and wait for the acknowledgement of every record; raise Unavailable when that cannot be."""
        if not records:
            return
        producer = self._producer
        s = self.settings
        if producer is None:
            raise Unavailable("broker_unavailable", f"Kafka is not reachable ({self.last_error})")
        size = sum(len(key) + len(value) for _, key, value in records)
        if self._requests >= s.gateway_max_in_flight_requests or self._bytes + size > s.gateway_max_in_flight_bytes:
            raise Unavailable("overloaded", "too many records wait for Kafka's acknowledgement; retry later")
        self._reserve(1, size)
        futures: list[asyncio.Future] = []
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(s.gateway_ack_timeout_s):
                    for topic, key, value in records:
                        futures.append(await producer.send(topic, value, key=key))
                    await asyncio.wait(futures)
            except TimeoutError:
                self._up(False)
                self.last_error = f"no acknowledgement within {s.gateway_ack_timeout_s:g} s"
                raise Unavailable("ack_timeout", f"Kafka did not acknowledge within {s.gateway_ack_timeout_s:g} s; "
                                  "retry later") from None
            except KafkaError as exc:
                self._up(False)
                self.last_error = f"{type(exc).__name__}: {exc}"
                raise Unavailable("broker_unavailable", f"Kafka refused the records ({type(exc).__name__})") from None
            failed = next((f.exception() for f in futures if f.exception() is not None), None)
            if failed is not None:
                self._up(False)
                self.last_error = f"{type(failed).__name__}: {failed}"
                raise Unavailable("broker_unavailable", f"Kafka refused the records ({type(failed).__name__})")
        finally:
            # Bytes stay reserved until aiokafka is done with every record sent: only then is their memory free.
            self._release_when_done(futures, size)
        self.metrics.produce_latency.observe(time.perf_counter() - started)
        self._up(True)

    def _up(self, up: bool) -> None:
        self.healthy = up
        self.metrics.broker_up.set(1 if up else 0)

    def _reserve(self, requests: int, size: int) -> None:
        self._requests += requests
        self._bytes += size
        self.metrics.in_flight_requests.set(self._requests)
        self.metrics.in_flight_bytes.set(self._bytes)

    def _release_when_done(self, futures: list[asyncio.Future], size: int) -> None:
        pending = [f for f in futures if not f.done()]
        if not pending:
            self._reserve(-1, -size)
            return
        left = [len(pending)]

        def one_done(_: asyncio.Future) -> None:
            left[0] -= 1
            if left[0] == 0:
                self._reserve(-1, -size)

        for f in pending:
            f.add_done_callback(one_done)
