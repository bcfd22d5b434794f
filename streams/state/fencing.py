"""Ownership epochs of the state changelog: what a worker that lost its partitions may still write is harmless.

Nothing fences a worker that froze or was cut off beyond the session timeout (tansu has no transactions): when
it wakes, record batches its producer had queued still reach the changelog, behind the state of the worker that
took its partitions over. Replayed in log order, those stale records would overwrite newer state, and as every
event remembers the highest input offset it applied, the input they lost would never be read again.

So every changelog partition is a sequence of ownership *epochs*:
- a worker that gains a partition claims the next epoch by writing a marker record (its own key, value = the
  epoch) before any state, and checks that the marker landed exactly at the end it restored up to (nothing it
  has not read came in between);
- every state record it writes carries its epoch in a record header;
- replaying a changelog (recovery) admits a record only if its epoch is not older than the newest one seen so
  far in that partition: what a superseded owner wrote after the claim is dropped;
- a worker whose changelog write lands anywhere but right after its previous one has lost the partition (or
  shares it with a zombie): it exits without touching its local store and rebuilds after its restart.

Records written before epochs existed carry no header and count as epoch 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

EPOCH_HEADER = "livepulse-epoch"
MARKER_PREFIX = b"\x00livepulse-epoch/"  # sorts before every state key (they are printable text)


def marker_key(partition: int) -> bytes:
    """The marker's key; one per partition (the memory store keeps every partition in one map)."""
    return MARKER_PREFIX + str(partition).encode()


def is_marker(key: bytes) -> bool:
    return key.startswith(MARKER_PREFIX)


def epoch_headers(epoch: int) -> list[tuple[str, bytes]]:
    """The headers of every record written in `epoch` (one list, shared by all of them)."""
    return [(EPOCH_HEADER, str(epoch).encode())]


def epoch_of(headers: Sequence[tuple[str, bytes]] | None) -> int:
    """The epoch a changelog record was written in (0: written before epochs, or by a foreign tool)."""
    for name, value in headers or ():
        if name == EPOCH_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return 0
    return 0


class ReplayFence:
    """Admits changelog records during a replay: per partition, none older than the newest epoch seen so far.

    `start_of(partition)` gives the epoch a replay starts from: the one the local store holds when the replay
    continues it, 0 when it starts from the beginning. It is asked once per partition and replay.
    """

    def __init__(self, start_of: Callable[[int], int]) -> None:
        self._start_of = start_of
        self._current: dict[int, int] = {}
        self.dropped = 0  # records of superseded owners dropped since the worker started

    def reset(self) -> None:
        """A new replay begins (every rebalance): the starting epochs are read again."""
        self._current.clear()

    def admit(self, partition: int, epoch: int) -> bool:
        current = self._current.get(partition)
        if current is None:
            current = self._current[partition] = self._start_of(partition)
        if epoch < current:
            self.dropped += 1
            return False
        if epoch > current:
            self._current[partition] = epoch
        return True
