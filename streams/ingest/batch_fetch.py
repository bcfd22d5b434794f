"""Deliver input records to the worker one poll at a time, and commit by position instead of per-record acks.

Faust hands every fetched record through its drain loop, the conductor and a stream (several coroutines, futures and a
queue per record), and then keeps per-record books for the commit: a Message object, tracking, an ack, a sorted list of
acked offsets. py-spy put that machinery above the whole domain processing (docs/performance.md "How it got here"). This
replaces the consumer's drain loop for the input topics: what one poll returns goes to the worker as aiokafka records
grouped by partition, in offset order. After the worker has persisted a batch it marks each processed partition done up
to the offset after its last record (`Positions.done`), and Faust's commit takes that offset. Offsets missing from a
poll (transaction markers, compacted records) need no bookkeeping: the position moves past them. Records of other topics
(table changelogs during recovery) still take Faust's path. Faust keeps the group, rebalances, recovery, the periodic
commit and flow control (no poll while the flow is stopped).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

log = logging.getLogger("livepulse.fetch")

# gets {tp: [aiokafka records of tp, offset order]} of one poll; returns once the batch is persisted
Handler = Callable[[dict[Any, list[Any]]], Awaitable[None]]


class Positions:
    """Input partition -> offset after its last record whose batch is persisted: the offset to commit next.

    Faust's periodic commit asks for it (consumer._new_offset) and takes it; a commit that fails leaves the
    partition to the next batch's position, exactly as Faust handles its own acked offsets."""

    def __init__(self, consumer: Any, topics: set[str]) -> None:
        self._consumer = consumer
        self._topics = topics
        self._done: dict[Any, int] = {}
        faust_new_offset = consumer._new_offset

        def new_offset(tp: Any) -> int | None:
            if tp.topic in topics:
                return self._done.pop(tp, None)
            return faust_new_offset(tp)

        consumer._new_offset = new_offset

    def done(self, tp: Any, next_offset: int) -> None:
        self._done[tp] = next_offset
        self._consumer._acked.setdefault(tp, [])  # Faust's commit only visits partitions in its ack books


def deliver_in_batches(app: faust.App, topics: set[str], handle: Handler) -> Positions:
    consumer = app.consumer
    positions = Positions(consumer, topics)

    async def drain(fetcher: Any) -> None:
        callback, to_message = consumer.callback, consumer._to_message
        while not (consumer._stopped.is_set() or fetcher._stopped.is_set()):
            records, active = await consumer._wait_next_records(1.0)
            if not records or consumer.should_stop:
                continue
            if not consumer.flow_active:  # a rebalance began while polling: read these again afterwards
                await consumer.perform_seek()
                continue
            batch = {}
            for tp, polled in records.items():
                if active is not None and tp not in active and tp not in consumer._buffered_partitions:
                    # paused since the poll began: Faust would drop these silently; read them again instead
                    await consumer.seek(tp, polled[0].offset)
                    continue
                if tp.topic in topics:
                    batch[tp] = polled
                else:
                    for record in polled:
                        await callback(to_message(tp, record))
            if batch:
                await handle(batch)

    consumer._drain_messages = drain
    return positions
