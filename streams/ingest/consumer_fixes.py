"""Workarounds for faust-streaming's consumer, so that nothing fetched or acknowledged is lost in a rebalance.

This is the only module that reaches into Faust's consumer internals; each fix names the behaviour it corrects.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

log = logging.getLogger("livepulse.consumer")


def commit_before_revocation(app: faust.App, checkpoint: Callable[[], Awaitable[None]]) -> None:
    """Checkpoint (persist what was processed and mark it done), then commit the acknowledged offsets when a
    rebalance revokes partitions, before Faust forgets them.

    faust-streaming's consumer drops the acknowledged-but-not-yet-committed offsets of revoked partitions and only
    then commits (faust-streaming/faust#502), and an eager rebalance revokes every partition, also those the worker
    keeps: each rebalance replayed up to a commit interval of records (harmless -- they are skipped and counted as
    redelivered -- but a scale-out or rolling restart re-read seconds of input on every worker).
    Acknowledged means processed with every state and output record acknowledged by the broker (see the commit
    order), so committing them here is as safe as Faust's periodic commit.
    """
    consumer = app.consumer
    revoke = consumer.on_partitions_revoked

    async def on_partitions_revoked(revoked: set) -> None:
        try:
            await checkpoint()
            await consumer.commit()
        except Exception:
            log.warning("checkpointing or committing before the rebalance failed; their records will be replayed",
                        exc_info=True)
        await revoke(revoked)

    consumer.on_partitions_revoked = on_partitions_revoked


def checkpoint_at_shutdown(app: faust.App, checkpoint: Callable[[], Awaitable[None]]) -> None:
    """Checkpoint once input has stopped flowing at shutdown, before the tables stop and the consumer's last commit.

    faust-streaming stops a worker by stopping the fetcher, then the tables, then commits (App._stop_consumer,
    Consumer.on_stop); leaving the group there does not go through the revocation above. Without this, what was
    processed since the last checkpoint would be read again after every restart (a rolling deploy).
    """
    stop_fetcher = app._stop_fetcher

    async def stop_fetcher_then_checkpoint() -> None:
        await stop_fetcher()
        try:
            await checkpoint()
        except Exception:
            log.warning("the checkpoint at shutdown failed; what was processed since the last one will be read "
                        "again", exc_info=True)

    app._stop_fetcher = stop_fetcher_then_checkpoint


async def rewind_to_committed(app: faust.App, topics: set[str], partitions: set[int]) -> None:
    """Move every owned input partition back to its committed offset (its first offset if none is committed).

    Records that reach the worker while a rebalance restores state are not processed (streams/app.py defers
    them); they must be read again. Faust's own seek after recovery leaves a partition without a committed offset
    (or at offset 0) wherever the fetcher got to, because aiokafka only seeks to positive committed offsets, so a
    new partition's first records could be skipped. The offsets are looked up first (in the consumer's thread)
    and the seeks then done together, without yielding to the event loop that delivers records.
    """
    consumer = app.consumer
    owned = {tp for tp in consumer.assignment() if tp.topic in topics and tp.partition in partitions}
    committed = await consumer.seek_to_committed()  # seeks the partitions with a positive committed offset
    rest = [tp for tp in owned if not committed.get(tp)]
    first = await consumer.earliest_offsets(*rest) if rest else {}
    for tp in rest:
        await consumer.seek(tp, first.get(tp) or 0)  # synchronous inside


def shorter_fetch_wait(app: faust.App, max_wait_ms: int) -> None:
    """Let the broker hold a fetch for at most `max_wait_ms` when it has nothing to return (Faust: 1,500 ms).

    aiokafka keeps one fetch request in flight per broker. When the partitions whose buffers just ran dry are
    only the quiet ones (the worker reads five input topics; most partitions of four of them are usually empty),
    the broker holds that request for the full wait, and the busy partitions, drained meanwhile, cannot be
    fetched until it returns: the worker sat idle for 0.3-0.5 s between polls with records waiting on the broker.
    """
    thread = app.consumer._thread
    create = thread._create_worker_consumer

    def create_worker_consumer(transport: Any) -> Any:
        consumer = create(transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read when the consumer starts and builds its fetcher
        return consumer

    thread._create_worker_consumer = create_worker_consumer
