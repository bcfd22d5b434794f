"""Peer B: the same minute-window interaction counts written the idiomatic Quix Streams way.

A StreamingDataFrame over the topic (JSON values, event time from the record's `ts`), a 1-minute tumbling window
per message key (event_id) with a 30 s grace, reduced to a count per interaction type, emitted when final.
State in RocksDB with its changelog topic (the Quix defaults).
Run: python -m streams.bench.peer_quix --bootstrap 127.0.0.1:9092 --topic T --partitions 8 --expected N ...
"""

from __future__ import annotations

import logging
import time

from streams.bench.common import (
    Stopwatch,
    contestant_args,
    loads_or_none,
    report,
    ts_ms,
)


def main() -> None:
    args = contestant_args()
    from quixstreams import Application
    from quixstreams.models.serializers.json import JSONDeserializer

    watch = Stopwatch(args.expected)
    windows_out = [0]
    late = [0]

    def on_late(value, key, timestamp_ms, late_by_ms, start, end, name, topic, partition, offset) -> bool:
        late[0] += 1
        return False  # counted, not logged

    def processed(topic: str, partition: int, offset: int) -> None:
        if watch.tick():
            app.stop()

    def event_time(value, headers, timestamp: float, timestamp_type) -> int:
        ts = ts_ms(value.get("ts")) if isinstance(value, dict) else None
        return ts if ts is not None else 0  # no event time (a malformed record): too late for any window, dropped

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.workdir,
        loglevel=logging.WARNING,
        on_message_processed=processed,
    )
    topic = app.topic(args.topic, key_deserializer="str", value_deserializer=JSONDeserializer(loads=loads_or_none),
                      timestamp_extractor=event_time)
    sdf = app.dataframe(topic)
    sdf = sdf.filter(lambda v: isinstance(v, dict) and isinstance(v.get("type"), str))
    sdf = sdf.tumbling_window(duration_ms=60_000, grace_ms=30_000, on_late=on_late).reduce(
        reducer=lambda agg, v: {**agg, v["type"]: agg.get(v["type"], 0) + 1},
        initializer=lambda v: {v["type"]: 1},
    ).final()
    sdf = sdf.update(lambda _: windows_out.__setitem__(0, windows_out[0] + 1))
    started = time.monotonic()
    app.run()
    report(watch.result(windows_emitted=windows_out[0], late_records=late[0], run_s=round(time.monotonic() - started, 3)))


if __name__ == "__main__":
    main()
