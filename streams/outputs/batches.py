"""Produce many records as one Kafka record batch per (topic, partition).

A batch of input turns into thousands of state and output records. Sending each through Faust's producer
(`send`/`send_soon`: a future, a callback and a buffer entry per record) cost more than processing the records
did (py-spy, docs/performance.md "How it got here"). Here records are appended to aiokafka batch builders (the
record format is built in C) and each builder is sent with one `send_batch`; the caller awaits one future per batch.

Keys are spread with the Kafka default partitioner (murmur2 over the topic's partitions), so a key lands where
any Kafka client would put it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import murmur2

from streams.outputs.fit import check

# Largest batch we build. Kafka's default message.max.bytes is 1 MiB; stay well under it.
MAX_BATCH_BYTES = 512 * 1024
NO_HEADERS: list[tuple[str, bytes]] = []  # (aiokafka's record builder takes a list, never a tuple)


@dataclass
class Sent:
    """One sent batch: await `future`; `count` records from the returned base offset on."""

    topic: str
    partition: int
    count: int
    future: asyncio.Future


@dataclass
class BatchSender:
    producer: Any  # aiokafka.AIOKafkaProducer
    max_message_bytes: int = 1_048_576  # a record over it is never sent (outputs/fit.py)
    _partitions: dict[str, list[int]] = field(default_factory=dict)
    _open: dict[tuple[str, int], Any] = field(default_factory=dict)  # (topic, partition) -> builder
    sent: list[Sent] = field(default_factory=list)

    async def partition_of(self, topic: str, key: bytes | None) -> int:
        """The partition Kafka's default partitioner gives `key` (partition 0 for a null key)."""
        parts = self._partitions.get(topic)
        if parts is None:
            parts = self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        return 0 if key is None else parts[(murmur2(key) & 0x7FFFFFFF) % len(parts)]

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
               headers: list[tuple[str, bytes]] = NO_HEADERS) -> bool:
        """Add a record to the open batch of (topic, partition) without awaiting anything; False when that batch
        is full (then `add` it: a coroutine per record cost more than the append itself, for thousands a poll)."""
        big_value = value is not None and len(value) > self.max_message_bytes - 8192
        if big_value or (key is not None and len(key) > 4096):  # (near the limit: count exactly)
            check(topic, key, value, headers, self.max_message_bytes)
        tp = (topic, partition)
        builder = self._open.get(tp)
        if builder is None:
            builder = self._open[tp] = self.producer.create_batch()
        return builder.append(key=key, value=value, timestamp=None, headers=headers) is not None

    async def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                  headers: list[tuple[str, bytes]] = NO_HEADERS) -> None:
        tp = (topic, partition)
        if not self.append(topic, partition, key, value, headers):  # full: send it, start another
            await self._send(tp)
            builder = self._open[tp] = self.producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes does not fit in a batch for {topic}")

    async def flush(self) -> list[Sent]:
        """Send every open batch; returns all batches sent since the last flush (await their futures)."""
        for tp in list(self._open):
            await self._send(tp)
        sent, self.sent = self.sent, []
        return sent

    async def _send(self, tp: tuple[str, int]) -> None:
        builder = self._open.pop(tp)
        builder.close()
        future = await self.producer.send_batch(builder, tp[0], partition=tp[1])
        self.sent.append(Sent(tp[0], tp[1], builder.record_count(), future))
