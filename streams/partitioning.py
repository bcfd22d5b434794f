"""Which partition an event_id belongs to: the Kafka default partitioner (murmur2 of the key bytes), as the
Java client, aiokafka and Faust use it, so records re-keyed by LivePulse land where keyed producers put them."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions
