"""Peer A: minute-window interaction counts written the idiomatic Faust way (benchmark code, not the product).

One agent iterates the stream record by record and increments a Faust table (memory store, changelog topic)
keyed "<event_id>|<minute>|<type>" -- the per-event style of the Faust documentation, as opposed to LivePulse's
batched `take_events` agent feeding a framework-free processor.
Run: python -m streams.bench.peer_faust --bootstrap 127.0.0.1:9092 --topic T --partitions 8 --expected N ...
"""

from __future__ import annotations

import asyncio
import logging
import os

from streams.bench.common import (
    Stopwatch,
    contestant_args,
    loads_or_none,
    minute_key,
    report,
)


def main() -> None:
    args = contestant_args()
    import faust

    logging.basicConfig(level=logging.WARNING)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        env={},
        store="memory://",
        datadir=args.workdir,
        topic_partitions=args.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
    )
    interactions = app.topic(args.topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    counts = app.Table("minute_counts", default=int, partitions=args.partitions)
    watch = Stopwatch(args.expected)

    @app.agent(interactions)
    async def count(stream: faust.StreamT) -> None:
        async for value in stream:
            key = minute_key(loads_or_none(value))
            if key is not None:
                counts[key] += 1
            if watch.tick():
                report(watch.result(keys=len(counts)))
                os._exit(0)  # measured; no need for a graceful shutdown of the benchmark peer

    asyncio.set_event_loop(asyncio.new_event_loop())
    app.finalize()
    app.worker_init()
    app.worker_init_post_autodiscover()
    faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
