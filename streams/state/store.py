"""Durable state: one Faust table of raw bytes, written per partition, backed by a compacted changelog.

The Processor decides *what* to persist (a list of (partition, key, value | tombstone) per batch); this module
only knows *how*: write the local store (memory or RocksDB) and send the changelog record to the same
partition number as the input partition the event lives on, so a worker that is assigned input partition p
recovers exactly the state of partition p.

Faust's own write path (`table[key] = value`) takes the partition from the "current event", which does not
exist when a whole batch is processed at once (and RocksDB's store asserts it), so the store is addressed by
explicit partition here. This is the only module that touches Faust store internals.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import faust
import rocksdict
from faust.tables.recovery import Recovery
from faust.types import TP

from streams import kafka
from streams.settings import Settings
from streams.state.fencing import ReplayFence, epoch_headers, epoch_of, is_marker, marker_key

log = logging.getLogger(__name__)

TABLE_NAME = "state"


def changelog_topic(app_id: str) -> str:
    return f"{app_id}-{TABLE_NAME}-changelog"


class StateTable(faust.Table):
    """A raw-bytes table that tells its owner when recovery of newly assigned partitions is complete, and whose
    recovery drops what superseded owners wrote (state/fencing.py)."""

    on_recovered: Callable[[set[int]], Awaitable[None]] | None = None
    fence: ReplayFence | None = None
    # (self.__dict__["read_through"]: partition -> the highest changelog offset recovery has read, applied or
    # dropped, into the local store; see PartitionedStore.read_end)

    def apply_changelog_batch(self, batch: Any) -> None:
        events = list(batch)
        read = self.__dict__.setdefault("read_through", {})
        for event in events:  # (in offset order per partition)
            read[event.message.partition] = event.message.offset
        fence = self.fence
        if fence is None:
            super().apply_changelog_batch(events)
            return
        admit = fence.admit
        epochs: dict[Any, int] = {}  # header list -> epoch (a batch of one owner shares a few header values)
        admitted = []
        for event in events:
            message = event.message
            headers = message.headers
            key = tuple(headers) if headers else None
            epoch = epochs.get(key)
            if epoch is None:
                epoch = epochs[key] = epoch_of(headers)
            if admit(message.partition, epoch):
                admitted.append(event)
        super().apply_changelog_batch(admitted)
        if len(admitted) == len(events):
            return
        log.warning("recovery dropped %d changelog records that a superseded owner wrote after a newer owner's "
                    "claim (%d so far)", len(events) - len(admitted), fence.dropped)
        if hasattr(self.data, "_db_for_partition"):
            # RocksDB: the dropped records are read too (a restart must not replay them as if new)
            last: dict[TP, int] = {}
            for event in events:
                message = event.message
                last[message.tp] = max(last.get(message.tp, -1), message.offset)
            for tp, offset in last.items():
                self.data.set_persisted_offset(tp, offset)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        if self.on_recovered is None:
            return
        try:
            await self.on_recovered({tp.partition for tp in active_tps})
        except Exception as exc:  # Faust awaits this through asyncio.wait(): an error would vanish silently
            log.exception("rebuilding state after recovery failed")
            await self.app.crash(exc)
            raise


class TrueEndRecovery(Recovery):
    """Faust's recovery, reading changelogs up to their true end on brokers whose ListOffsets lags.

    Recovery replays a changelog partition until the "highwater" the broker lists. tansu lists the base offset
    of the last record batch, so a batch of state writes at the tail would be skipped (state lost) and a
    RocksDB store that already holds it fails Faust's consistency check. See kafka.end_offsets.
    """

    settings: Settings

    async def _build_highwaters(self, consumer: Any, tps: set[TP], destination: Any, title: str) -> None:
        await super()._build_highwaters(consumer, tps, destination, title)
        listed = {(tp.topic, tp.partition): last + 1 for tp, last in destination.items()}
        true_end = await kafka.end_offsets(self.settings, listed)
        for tp in list(destination):
            corrected = true_end[(tp.topic, tp.partition)] - 1
            if corrected != destination[tp]:
                log.info("changelog %s[%d]: end offset %d, not the listed %d", tp.topic, tp.partition,
                         corrected + 1, destination[tp] + 1)
                destination[tp] = corrected


def use_true_end_recovery(app: faust.App, settings: Settings) -> None:
    tables = app.tables
    recovery = TrueEndRecovery(app, tables, beacon=tables.beacon, loop=tables.loop)
    recovery.settings = settings
    tables._recovery = recovery


class PartitionedStore:
    """Local store + changelog writes addressed by explicit partition."""

    def __init__(self, table: StateTable) -> None:
        self.table = table
        self.last_written: dict[int, int] = {}  # partition -> offset of this worker's last changelog record
        self.epochs: dict[int, int] = {}  # owned partition -> the ownership epoch this worker claimed
        self.headers: dict[int, list[tuple[str, bytes]]] = {}  # owned partition -> headers of its state records
        self.fence = table.fence = ReplayFence(self._replay_starts_at)

    # ------------------------------------------------------------------ ownership epochs (state/fencing.py)
    def _replay_starts_at(self, partition: int) -> int:
        """The epoch a replay of `partition` continues from: the local store's when it holds a prefix of the
        changelog (RocksDB), 0 when the replay starts at the beginning (memory store, new files)."""
        if self.table.data.persisted_offset(TP(self.changelog, partition)) is None:
            return 0
        return self.stored_epoch(partition)

    def stored_epoch(self, partition: int) -> int:
        store, key = self._store, marker_key(partition)
        value = store._db_for_partition(partition).get(key) if self._rocksdb() else store.data.get(key)
        return int(value) if value is not None else 0

    def read_end(self, partition: int) -> int:
        """The offset after the last changelog record the local store holds for `partition`: what recoveries read
        into it, or (RocksDB) what its files held already."""
        read = self.table.__dict__.get("read_through", {}).get(partition, -1)
        persisted = self._store.persisted_offset(TP(self.changelog, partition))
        return max(read, persisted if persisted is not None else -1) + 1

    def unread(self, partitions: set[int]) -> dict[int, tuple[int, int]]:
        """Partitions whose recovery was reported complete before it read to the end: {p: (read to, end)}.
        A rebalance in the middle of a recovery can do that (the recovery then goes on in the background)."""
        ends = {p: (self.read_end(p), self.restored_end(p)) for p in partitions}
        return {p: (read, end) for p, (read, end) in ends.items() if read < end}

    def restored_end(self, partition: int) -> int:
        """The offset after the last changelog record the recovery that just ended read for `partition`."""
        tp = TP(self.changelog, partition)
        highwater = self.table.app.tables._recovery.active_highwaters.get(tp)
        return (highwater if highwater is not None else -1) + 1

    def claim(self, partition: int) -> tuple[int, bytes, bytes, list[tuple[str, bytes]]]:
        """The marker record that claims the next epoch of `partition`: (epoch, key, value, headers)."""
        epoch = self.stored_epoch(partition) + 1
        return epoch, marker_key(partition), str(epoch).encode(), epoch_headers(epoch)

    def claimed(self, partition: int, epoch: int, offset: int) -> bool:
        """The marker landed at `offset`; True if nothing this worker has not read came before it (the claim
        holds: its state records now carry `epoch`)."""
        if offset != self.restored_end(partition):
            return False
        self.epochs[partition] = epoch
        self.headers[partition] = epoch_headers(epoch)
        return True

    def follows_last_write(self, partition: int, base_offset: int) -> bool:
        """A changelog batch of ours landed right after our previous write to the partition: nobody else wrote."""
        return base_offset == self.last_written.get(partition, -2) + 1

    def written_by_others(self, partitions: set[int]) -> set[int]:
        """Partitions whose changelog, as the recovery that just ended read it, goes on past this worker's last
        write: another worker owned them in between (this one was paused or cut off from the group)."""
        topic = self.changelog
        ends = {tp.partition: hw for tp, hw in self.table.app.tables._recovery.active_highwaters.items()
                if tp.topic == topic and hw is not None}
        return {p for p in partitions if ends.get(p, -1) > self.last_written.get(p, -1)}

    @property
    def _store(self) -> Any:
        return self.table.data

    def _rocksdb(self) -> bool:
        return hasattr(self._store, "_db_for_partition")

    @property
    def changelog(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def write(self, items: list[tuple[int, bytes, bytes | None]]) -> None:
        """Write (partition, key, value | tombstone) to the local store only, in order; RocksDB gets one write batch
        per partition. The caller sends the changelog records (in record batches, see outputs.batches)."""
        store = self._store
        if self._rocksdb():
            batches: dict[int, Any] = {}
            index = store._key_index
            for partition, key, value in items:
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = rocksdict.WriteBatch(raw_mode=True)
                if value is None:
                    batch.delete(key)
                    index.pop(key, None)
                else:
                    # (Faust's key -> partition index, a locked LRU, is left alone: state is only ever read back
                    # by scanning a partition, and updating it cost a third of this write per key.)
                    batch.put(key, value)
            for partition, batch in batches.items():
                store._db_for_partition(partition).write(batch)
            return
        data, where = store.data, store._key_partition
        for partition, key, value in items:
            if value is None:
                data.pop(key, None)
                where.pop(key, None)
            else:
                data[key] = value
                where[key] = partition

    def changelog_written(self, partition: int, last_offset: int) -> None:
        """The changelog holds this partition's writes up to `last_offset`: RocksDB remembers it, so a restart
        replays only what came after (what Faust's own send path does per record)."""
        self.last_written[partition] = last_offset
        if self._rocksdb():
            self._store.set_persisted_offset(TP(self.changelog, partition), last_offset)

    def scan(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) the store holds for one partition."""
        store = self._store
        if self._rocksdb():
            items = store._visible_items(store._db_for_partition(partition))
            for key, value in items:  # keys in order: only the first can be the epoch marker
                if not is_marker(key):
                    yield key, value
                break
            yield from items
            return
        data = store.data
        for key, p in list(store._key_partition.items()):
            if p == partition and not is_marker(key):
                value = data.get(key)
                if value is not None:
                    yield key, value

    def forget(self, partitions: set[int]) -> None:
        """This worker no longer owns `partitions`: no epoch to write in; the memory store drops their keys
        (RocksDB keeps its files for a fast return)."""
        for partition in partitions:
            self.epochs.pop(partition, None)
            self.headers.pop(partition, None)
            self.last_written.pop(partition, None)
        if self._rocksdb():
            return
        read = self.table.__dict__.get("read_through", {})
        for partition in partitions:
            read.pop(partition, None)  # (dropped below: a later recovery reads it from the beginning)
        store = self._store
        for key, p in list(store._key_partition.items()):
            if p in partitions:
                store.data.pop(key, None)
                store._key_partition.pop(key, None)
