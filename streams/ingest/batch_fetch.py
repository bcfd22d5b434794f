"""Deliver input records to the worker one poll at a time instead of one record at a time.

Faust hands every fetched record through its drain loop, the conductor and a stream (several coroutines, futures
and a queue per record): py-spy put that machinery above the whole domain processing (README "Performance").
This replaces the consumer's drain loop: what one poll returns for the input topics goes to the worker as one
batch, in offset order per partition; records of other topics (table changelogs during recovery) still take
Faust's path. Faust keeps everything else: the group, rebalances, recovery, commit bookkeeping (each message is
tracked, then acknowledged once its batch is persisted) and flow control (no poll while the flow is stopped).
With the batch the handler gets, per input partition in it, the offset after its last record (what the worker
measures its consumer lag from: once per partition and batch, not per record).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

log = logging.getLogger("livepulse.fetch")

# gets Faust messages and {tp: offset after the tp's last message}; acknowledges the messages when persisted
Handler = Callable[[list[Any], dict[Any, int]], Awaitable[None]]


def deliver_in_batches(app: faust.App, topics: set[str], handle: Handler) -> None:
    consumer = app.consumer

    async def drain(fetcher: Any) -> None:
        callback = consumer.callback
        to_message, track = consumer._to_message, consumer.track_message
        while not (consumer._stopped.is_set() or fetcher._stopped.is_set()):
            records, active = await consumer._wait_next_records(1.0)
            if not records or consumer.should_stop:
                continue
            if not consumer.flow_active:  # a rebalance began while polling: read these again afterwards
                await consumer.perform_seek()
                continue
            batch, ends = [], {}
            for tp, polled in records.items():
                if active is not None and tp not in active and tp not in consumer._buffered_partitions:
                    # paused since the poll began: Faust would drop these silently; read them again instead
                    await consumer.seek(tp, polled[0].offset)
                    continue
                if tp.topic in topics:
                    for record in polled:
                        message = to_message(tp, record)
                        track(message)
                        batch.append(message)
                    ends[tp] = polled[-1].offset + 1
                else:
                    for record in polled:
                        await callback(to_message(tp, record))
            if batch:
                await handle(batch, ends)

    consumer._drain_messages = drain
