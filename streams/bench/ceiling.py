"""The ceiling: a bare aiokafka consumer, orjson decode and a dict count per (event, minute, type).

No framework, no state store, no outputs: what a Python consumer on this machine and broker can do at best.
Run: python -m streams.bench.ceiling --bootstrap 127.0.0.1:9092 --topic T --partitions 8 --expected N ...
"""

from __future__ import annotations

import asyncio

from streams.bench.common import (
    Stopwatch,
    contestant_args,
    loads_or_none,
    minute_key,
    report,
)


async def run(args) -> dict:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
                                auto_offset_reset="earliest", enable_auto_commit=True,
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    watch = Stopwatch(args.expected)
    counts: dict[str, int] = {}
    try:
        done = False
        while not done:
            batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for messages in batches.values():
                for msg in messages:
                    key = minute_key(loads_or_none(msg.value))
                    if key is not None:
                        counts[key] = counts.get(key, 0) + 1
                done = watch.tick(len(messages)) or done
    finally:
        await consumer.stop()
    return watch.result(keys=len(counts), counted=sum(counts.values()))


def main() -> None:
    report(asyncio.run(run(contestant_args())))


if __name__ == "__main__":
    main()
