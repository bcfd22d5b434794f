"""livepulse_consumer_lag_records: what streams/app.py records per partition becomes one series per input topic
(tests/integration/test_slow_consumer.py runs it on a real worker)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from streams.outputs.metrics import ConsumerLag, exposition
from streams.processor import Processor
from streams.settings import Settings

TOPICS = ("in.interactions", "in.events", "in.rekeyed")


def lag_series(lag: ConsumerLag) -> dict[str, float]:
    text = exposition(Processor(Settings(), partitions=4), consumer_lag=lag).decode()
    return {s.labels["topic"]: s.value for family in text_string_to_metric_families(text)
            if family.name == "livepulse_consumer_lag_records" for s in family.samples}


def test_every_input_topic_is_exported_and_an_idle_worker_shows_0():
    assert lag_series(ConsumerLag(TOPICS)) == dict.fromkeys(TOPICS, 0)


def test_partitions_add_up_per_topic_and_the_latest_measure_of_a_partition_wins():
    lag = ConsumerLag(TOPICS)
    lag.update("in.interactions", 0, highwater=1000, next_offset=400)
    lag.update("in.interactions", 1, highwater=50, next_offset=50)
    lag.update("in.interactions", 2, highwater=300, next_offset=100)
    lag.update("in.events", 2, highwater=10, next_offset=7)
    assert lag_series(lag) == {"in.interactions": 800, "in.events": 3, "in.rekeyed": 0}
    lag.update("in.interactions", 0, highwater=1200, next_offset=1200)  # partition 0 caught up
    assert lag_series(lag)["in.interactions"] == 200


def test_a_high_watermark_behind_the_next_offset_counts_as_caught_up():
    lag = ConsumerLag(TOPICS)
    lag.update("in.events", 0, highwater=5, next_offset=9)  # a fetch response older than the records processed
    assert lag_series(lag)["in.events"] == 0


def test_partitions_no_longer_owned_are_forgotten():
    lag = ConsumerLag(TOPICS)
    for partition in range(4):
        lag.update("in.interactions", partition, highwater=100, next_offset=90)
    lag.keep({1, 3})
    assert lag.remaining == {("in.interactions", 1): 10, ("in.interactions", 3): 10}
    assert lag_series(lag)["in.interactions"] == 20
