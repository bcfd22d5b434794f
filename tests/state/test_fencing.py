"""Ownership epochs of the changelog (streams/state/fencing.py), without a broker."""

from __future__ import annotations

from streams.state.fencing import (
    EPOCH_HEADER,
    ReplayFence,
    epoch_headers,
    epoch_of,
    is_marker,
    marker_key,
)


def replay(fence: ReplayFence, log: list[tuple[int, int, str]]) -> list[str]:
    """(partition, epoch, name) in log order -> the names admitted."""
    return [name for partition, epoch, name in log if fence.admit(partition, epoch)]


def test_a_superseded_owner_s_late_writes_are_dropped_and_the_new_owner_s_kept():
    fence = ReplayFence(lambda partition: 0)
    log = [(0, 1, "a"), (0, 1, "b"), (0, 2, "claim-2"), (0, 2, "c"), (0, 1, "zombie"), (0, 2, "d")]
    assert replay(fence, log) == ["a", "b", "claim-2", "c", "d"]
    assert fence.dropped == 1


def test_epochs_are_per_partition():
    fence = ReplayFence(lambda partition: 0)
    log = [(0, 3, "p0"), (1, 1, "p1-old-owner"), (1, 1, "p1"), (0, 2, "p0-zombie")]
    assert replay(fence, log) == ["p0", "p1-old-owner", "p1"]


def test_a_replay_continuing_a_local_store_starts_from_its_epoch_and_reset_reads_it_again():
    starts = {0: 4}
    fence = ReplayFence(lambda partition: starts.get(partition, 0))
    assert replay(fence, [(0, 3, "older than the store"), (0, 4, "same"), (0, 5, "newer")]) == ["same", "newer"]
    starts[0] = 0  # e.g. the memory store replays from the beginning after the next rebalance
    fence.reset()
    assert replay(fence, [(0, 1, "first"), (0, 2, "second")]) == ["first", "second"]


def test_records_written_before_epochs_count_as_epoch_0():
    fence = ReplayFence(lambda partition: 0)
    assert epoch_of(None) == 0 and epoch_of([]) == 0 and epoch_of([("other", b"7")]) == 0
    assert epoch_of([(EPOCH_HEADER, b"not a number")]) == 0
    assert replay(fence, [(0, epoch_of(None), "legacy"), (0, 1, "claim"), (0, epoch_of(None), "legacy late")]) \
        == ["legacy", "claim"]


def test_headers_round_trip_and_markers_are_recognised():
    assert epoch_of(epoch_headers(12)) == 12
    assert marker_key(3) != marker_key(4) and is_marker(marker_key(3))
    assert not is_marker(b"webinar-1") and not is_marker(b"webinar-1\x1fa-1")
    # the marker sorts before every printable state key (RocksDB scans skip only the first key)
    assert marker_key(0) < b" "
