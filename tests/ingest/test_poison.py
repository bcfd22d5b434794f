"""The in-flight file: a batch a process died in is taken apart, and a record it died on alone is skipped."""

from __future__ import annotations

import orjson

from streams.ingest.poison import FILE_NAME, PoisonGuard
from streams.processor import RawRecord


def records(topic: str, partition: int, offsets) -> list[RawRecord]:
    return [RawRecord(topic, partition, o, b"k", b"v") for o in offsets]


def died_with(path, batch) -> None:
    """A process that noted `batch` in flight and never got to say it was done."""
    guard = PoisonGuard(path, 3)
    guard.begin(batch)
    guard.close()


def test_nothing_in_flight_means_one_chunk_and_no_suspects(tmp_path):
    path = tmp_path / FILE_NAME
    batch = records("in", 0, range(10))
    guard = PoisonGuard(path, 3)
    guard.begin(batch)
    guard.done(batch)
    guard.close()
    again = PoisonGuard(path, 3)
    assert again.died_in == [] and again.suspects == {}
    assert [(list(c), d) for c, d in again.chunks(batch)] == [(batch, 0)]


def test_a_batch_the_process_died_in_is_taken_one_record_at_a_time(tmp_path):
    path = tmp_path / FILE_NAME
    batch = records("in", 0, range(100, 105)) + records("in", 1, range(7, 9))
    died_with(path, batch)
    guard = PoisonGuard(path, 3)
    assert sorted(guard.died_in) == [["in", 0, 100, 104], ["in", 1, 7, 8]]
    later = records("in", 0, range(98, 107))  # the next poll starts before and ends after the suspects
    chunks = [([r.offset for r in c], d) for c, d in guard.chunks(later)]
    assert chunks == [([98, 99], 0), ([100], 0), ([101], 0), ([102], 0), ([103], 0), ([104], 0), ([105, 106], 0)]


def test_a_record_the_process_died_on_alone_is_skipped_after_max_attempts(tmp_path):
    path = tmp_path / FILE_NAME
    batch = records("in", 0, range(10))
    died_with(path, batch)
    poison = batch[4]
    deaths = []
    for _ in range(3):  # it dies on record 4 every time it is alone in flight
        guard = PoisonGuard(path, 3)
        for chunk, d in guard.chunks(batch):
            if chunk[0].offset == poison.offset:
                deaths.append(d)
                if d >= guard.max_attempts:
                    guard.done(chunk)  # the caller dead-letters it
                    continue
                guard.begin(chunk)
                break  # the process dies
            guard.begin(chunk)
            guard.done(chunk)
        guard.close()
    assert deaths == [0, 1, 2]
    guard = PoisonGuard(path, 3)
    got = [(c[0].offset, d) for c, d in guard.chunks(batch) if c[0].offset == poison.offset]
    assert got == [(4, 3)], "the fourth start skips it"
    for chunk, _ in guard.chunks(batch):
        guard.begin(chunk)
        guard.done(chunk)
    assert guard.suspects == {}, "once past them, suspects are forgotten"
    guard.close()
    assert orjson.loads(path.read_bytes()) == {"in_flight": [], "suspects": []}


def test_suspects_expire_and_a_torn_file_starts_afresh(tmp_path):
    path = tmp_path / FILE_NAME
    died_with(path, records("in", 0, range(3)))
    old = PoisonGuard(path, 3, now=1e12)  # noted long ago: wall time far ahead now
    old.close()
    assert PoisonGuard(path, 3, now=1e12 + 86_401).suspects == {}
    path.write_bytes(b'{"in_flight": [["in", 0')
    assert PoisonGuard(path, 3).suspects == {}


def test_without_a_path_nothing_is_written(tmp_path):
    guard = PoisonGuard(None, 3)
    batch = records("in", 0, range(3))
    guard.begin(batch)
    guard.done(batch)
    assert list(tmp_path.iterdir()) == []
