"""The Faust worker: orchestration only.

    input topics ──one poll (ingest.batch_fetch)──▶ Processor.process ──▶ state writes ─▶ local store + changelog
    (interactions, events, rekeyed,                  (framework-free)  └▶ outputs ─────▶ dlq, minute, summary, leads,
     crm.opportunities, roi.facts)                                                       rekeyed, live, roi.facts, roi
                                      (all sent as one record batch per topic-partition: outputs.batches)
    timer (≤1 s) ─▶ Processor.tick: due summaries, retention expiry, live snapshots
    web: /metrics (scrape-time collector over what this worker owns), /health

Commit order (at-least-once, made exact by idempotent processing): each batch's output records are sent and
acknowledged before the next batch; at a checkpoint (at most every checkpoint_interval_s) the state records of
everything changed since the last one (per event, the event key last) are sent and acknowledged *before* the
input partitions processed since are marked done up to their last offset (ingest.batch_fetch.Positions), which
Faust's periodic commit then takes. A crash in between replays that input; the domain's id memory and per-window
offsets turn the replay into a no-op (outputs already sent may be sent again).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from typing import Any

import click
import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams import hot_path, kafka, logs
from streams.heap import TrimWhenQuiet, release_free_memory
from streams.ingest import batch_fetch, consumer_fixes, poison
from streams.outputs import fit
from streams.outputs.batches import MAX_BATCH_BYTES, BatchSender
from streams.outputs.metrics import BatchSizes, ConsumerLag, LivePulseCollector, Ownership, worker_registry
from streams.outputs.snapshots import SnapshotPacing
from streams.partitioning import partition_for
from streams.processor import Output, Processor, lead_key
from streams.settings import Settings
from streams.state.freeze_watch import FreezeWatch
from streams.state.store import (
    TABLE_NAME,
    PartitionedStore,
    StateTable,
    changelog_topic,
    use_true_end_recovery,
)
from streams.topics import topic_configs

log = logging.getLogger("livepulse.worker")

TICK_INTERVAL_S = 1.0  # how often due summaries and retention are checked; snapshots follow snapshot_interval_s

# The state is millions of small long-lived objects: with CPython's default thresholds the cyclic collector rescans them
# so often that it took ~45% of the processing time (py-spy, docs/performance.md "How it got here"). Collect the young
# generation less often, and move restored state out of the collector's sight (gc.freeze) after recovery.
GC_THRESHOLDS = (50_000, 20, 100)
# RocksDB keeps written records in memtables of write_buffer_size until one fills and is flushed to a file, per
# partition's store. Faust's default is 64 MiB (up to 3 of them): the ~40 MB of state records each of 4 partitions
# gets for 1,000,000 attendees then never leaves memory (186 MiB of RSS measured in-process; a kill -9 restart
# replays them from the write-ahead log into memory again). 16 MiB flushes sooner: 70 MiB for the same writes.
ROCKSDB_WRITE_BUFFER_BYTES = 16 << 20
EXIT_BATCH_FAILED = 70  # EX_SOFTWARE: a batch failed; nothing of it was committed
EXIT_FROZEN = 75  # EX_TEMPFAIL: the process stood still beyond the session timeout; restart it (state/freeze_watch)
EXIT_RECOVERY_INCOMPLETE = 75  # EX_TEMPFAIL: Faust reported a recovery complete that was not; restart it
EXIT_FAUST_RESTART = 75  # EX_TEMPFAIL: Faust's rebalance handling stopped the worker (run_worker); restart it
EXIT_FENCED = 75  # EX_TEMPFAIL: another worker wrote to a changelog partition of ours; restart (state/fencing)


def tick_interval(settings: Settings) -> float:
    """A quarter of the snapshot interval at most: a timer as long as the interval fires a hair early now and
    then, finds the snapshot not yet due, and the live figures skip a whole interval (2 s instead of 1 s)."""
    return min(TICK_INTERVAL_S, settings.snapshot_interval_s / 4)


class Worker:
    """Moves bytes between Faust and the Processor; owns nothing but the wiring."""

    def __init__(self, app: faust.App, settings: Settings, partitions: int, table: StateTable) -> None:
        self.app = app
        self.s = settings
        self.partitions = partitions
        self.processor = Processor(settings, partitions=partitions)
        self.store = PartitionedStore(table)
        self.owned: set[int] = set()
        self.ready = False
        self.snapshots = SnapshotPacing(settings.snapshot_interval_s, settings.snapshot_max_share)
        self.batch_sizes = BatchSizes()
        self.source_topics = set(input_topics(settings))
        # per owned input partition, updated once per batch; and when interactions were last read (input stalls)
        self.consumer_lag = ConsumerLag(self.source_topics, (settings.topic_interactions, settings.topic_rekeyed))
        self.ownership = Ownership()  # partitions owned, rebalances (for /metrics)
        self.positions: batch_fetch.Positions | None = None  # what Faust commits for the input (build_app sets it)
        # One batch, tick or checkpoint at a time, each sent before the next begins: state records then reach every
        # changelog partition in processing order (the domain relies on it, see EventState's delayed pruning).
        self.emitting = asyncio.Lock()
        # Close to the session timeout: after a freeze that long the group has given (or is about to give) this
        # worker's partitions to another. Shorter stalls (a long GC) must not cost a restart.
        self.freeze = FreezeWatch(limit_s=settings.session_timeout_s * 0.8)
        # Checkpoints (commit order above): input processed since the last one is marked done for the commit only
        # once the state it changed is written, at most every checkpoint_interval_s.
        self.unpersisted_ends: dict[Any, int] = {}  # input partition -> offset after its last processed record
        self.next_checkpoint = 0.0  # (time.monotonic)
        self.heap_trim = TrimWhenQuiet()  # freed heap memory back to the OS (streams/heap.py)
        self.poison = poison.guard_for(settings.data_dir, settings.poison_attempts)
        if self.poison.died_in:
            log.warning("the previous process died while processing %s: those records are taken one at a time "
                        "now, and one it died on %d times alone is skipped", self.poison.died_in,
                        settings.poison_attempts)
        table.on_recovered = self.on_recovered

    # ------------------------------------------------------------------ rebalances
    def on_revoked(self) -> None:
        self.ready = False
        # Not yet persisted, so not to be committed: every partition kept or gained is rewound to its committed
        # offset after the rebalance (on_recovered) and those records come again (redeliveries, skipped). This
        # also drops the ends of a batch still being sent.
        self.unpersisted_ends.clear()
        self.store.fence.reset()  # the recovery that follows replays from the epochs its stores hold

    async def on_recovered(self, active: set[int]) -> None:
        """Recovery of the changelog is complete: drop what we lost, rebuild what we gained, re-read what arrived
        while we were not ready.

        Records that arrived before this point were deferred, not processed: every owned partition goes back to
        its committed offset before processing starts (see consumer_fixes.rewind_to_committed).
        """
        started = time.monotonic()
        kept = self.owned & active
        # A partition "kept" across a rebalance may have been another worker's in between (this one was paused
        # beyond the session timeout): its state in memory is stale, rebuild it like a gained one.
        stale = self.store.written_by_others(kept)
        if stale:
            log.warning("partitions %s were written by another worker since this one last did: rebuilding them",
                        sorted(stale))
            self.processor.drop_partitions(stale)
        lost, gained = self.owned - active, (active - self.owned) | stale
        unread = self.store.unread(gained)
        if unread:
            exit_now(EXIT_RECOVERY_INCOMPLETE, "recovery was reported complete, but changelog partitions were "
                     "read only to %s of their ends (a rebalance in the middle of the recovery); exiting (exit "
                     "%d) without writing, to be restarted and rebuilt from the changelog",
                     {p: f"{read}/{end}" for p, (read, end) in sorted(unread.items())}, EXIT_RECOVERY_INCOMPLETE)
        if lost:
            self.processor.drop_partitions(lost)
            self.store.forget(lost)
        restored = 0
        now = time.time()
        for partition in sorted(gained):
            restored += self.processor.restore(partition, self.store.scan(partition), now)
        await self.claim(gained)
        self.owned = set(active)
        self.consumer_lag.keep(self.owned)
        self.ownership.recovered(len(self.owned))
        await consumer_fixes.rewind_to_committed(self.app, self.source_topics, active)
        self.ready = True
        gc.freeze()
        release_free_memory()  # (what restoring the records took: streams/heap.py)
        log.info("partitions %s: restored %d events in %.3f s (released %s); reading on from the committed offsets "
                 "(%d records deferred so far)", sorted(active), restored, time.monotonic() - started, sorted(lost),
                 self.processor.counters.deferred)

    async def claim(self, partitions: set[int]) -> None:
        """Claim the next ownership epoch of each gained changelog partition (state/fencing.py) before writing
        any state to it; exit if another worker wrote to one after the recovery read it."""
        if not partitions:
            return
        async with self.emitting:
            self.exit_if_frozen()
            sender = BatchSender(self.app.producer._ensure_producer())
            changelog = self.store.changelog
            claims = {}
            for partition in sorted(partitions):
                epoch, key, value, headers = self.store.claim(partition)
                claims[partition] = (epoch, key, value)
                sender.append(changelog, partition, key, value, headers)
            sent = await sender.flush()
            results = await asyncio.gather(*(batch.future for batch in sent))
            self.exit_if_frozen()
            for batch, meta in zip(sent, results):
                epoch, key, value = claims[batch.partition]
                if not self.store.claimed(batch.partition, epoch, meta.offset):
                    exit_now(EXIT_FENCED, "changelog %s[%d] went on past the end its recovery read (%d) before "
                             "this worker claimed it (at %d): another worker wrote to it; exiting (exit %d) to be "
                             "restarted and rebuilt from the changelog", changelog, batch.partition,
                             self.store.restored_end(batch.partition), meta.offset, EXIT_FENCED)
                self.store.write([(batch.partition, key, value)])
                self.store.changelog_written(batch.partition, meta.offset)
            log.info("claimed %s", ", ".join(f"partition {p} epoch {c[0]}" for p, c in sorted(claims.items())))

    # ------------------------------------------------------------------ the hot path
    async def handle_polled(self, polled: dict[Any, list[Any]]) -> None:
        """A poll's worth of input (ingest.batch_fetch), aiokafka records per partition: process the records of
        restored, owned partitions (marked done for the commit at the next checkpoint, see `process`) and measure
        their consumer lag. Records of other partitions are deferred (see `defer`)."""
        records, ends = [], {}
        ready, owned = self.ready, self.owned
        for tp, part in polled.items():
            if ready and tp.partition in owned:
                records.extend(part)
                ends[tp] = part[-1].offset + 1
            else:
                self.defer(len(part))
        await self.process(records, ends)
        highwater = self.app.consumer.highwater
        read_at = time.time()
        for tp, end in ends.items():
            self.consumer_lag.read(tp.topic, read_at)
            if not self.ready or tp.partition not in self.owned:
                continue  # released while the batch was written
            # Consumer lag: the high watermark of the consumer's latest fetch for the partition minus the next
            # offset to process. Once per partition and batch.
            try:
                high = highwater(tp)
            except (AssertionError, AttributeError):  # no longer assigned (a rebalance began): measured next time
                continue
            if high is not None:
                self.consumer_lag.update(tp.topic, tp.partition, high, end)

    async def handle(self, messages: list[Any]) -> None:
        """Faust messages from the agent's stream (a fallback: input normally comes through handle_polled).
        The agent acknowledges them when this returns; a deferred one is marked acked now, which keeps it out
        of the commit."""
        records = []
        ready, owned = self.ready, self.owned
        for msg in messages:
            if ready and msg.partition in owned:
                records.append(msg)
            else:
                msg.acked = True
                self.defer(1)
        await self.process(records)

    def defer(self, n: int) -> None:
        """Faust resumes the flow of newly assigned partitions before their state is restored (and a batch may
        straddle a rebalance). Such records must neither touch state nor be committed; on_recovered rewinds
        their partitions to read them again."""
        self.processor.counters.deferred += n

    async def process(self, records: list[Any], ends: dict[Any, int] | None = None) -> None:
        """Process records (anything with topic, partition, offset, key, value) and send their outputs; persist
        the state when a checkpoint is due. `ends`: input partition -> offset after its last record here, marked
        done at the checkpoint. Without it (Faust acknowledges the records itself) the state is persisted now."""
        if not records:
            return
        self.batch_sizes.observe(len(records))
        self.heap_trim.busy()
        async with self.emitting:
            self.unpersisted_ends.update(ends or {})
            out = self.apply(records, time.time())
            await self.send(out, checkpoint=ends is None or self.checkpoint_due())

    def apply(self, records: list[Any], wall_now: float) -> Output:
        """The Processor's work on a batch, noted in flight (ingest/poison.py): records the process died on
        before are taken one at a time, and skipped once it died on one of them poison_attempts times."""
        guard, out = self.poison, None
        for chunk, deaths in guard.chunks(records):
            if deaths >= guard.max_attempts:
                log.error("skipping %s[%d] offset %d: this worker died %d times while processing it alone; "
                          "dead-lettered (poison_record)", chunk[0].topic, chunk[0].partition, chunk[0].offset,
                          deaths)
                part = self.processor.poisoned(chunk[0], deaths, wall_now)
            else:
                guard.begin(chunk)
                part = self.processor.process(chunk, wall_now, persist=False)
            guard.done(chunk)
            out = part if out is None else out.extend(part)
        return out if out is not None else Output()

    async def checkpoint(self) -> None:
        """Persist everything processed so far and mark it done now: before a revocation commits, and at shutdown,
        so that no partition's new owner, nor this worker, reads it again."""
        async with self.emitting:
            await self.send(Output(), checkpoint=True)

    def checkpoint_due(self) -> bool:
        return time.monotonic() >= self.next_checkpoint

    async def send(self, out: Output, *, checkpoint: bool) -> None:
        """Emit `out`; at a checkpoint, with the state changed since the last one, then mark the input processed
        since then done for Faust's next commit."""
        if checkpoint:
            self.processor.persist_changed(out)
        await self.emit(out)
        if checkpoint:
            for tp, end in self.unpersisted_ends.items():
                self.positions.done(tp, end)
            self.unpersisted_ends.clear()
            self.next_checkpoint = time.monotonic() + self.s.checkpoint_interval_s

    async def tick(self) -> None:
        if not self.ready:
            return
        async with self.emitting:
            now = time.time()
            snapshots = self.snapshots.due(now)
            started = time.perf_counter()
            out = self.processor.tick(now, snapshots=snapshots)
            if snapshots:
                self.snapshots.done(now, time.perf_counter() - started)
            await self.send(out, checkpoint=self.checkpoint_due())
            del out
        self.heap_trim.tick()

    def exit_if_frozen(self) -> None:
        """Write nothing after a freeze near the session timeout (state/freeze_watch.py): exit to be restarted."""
        frozen = self.freeze.frozen_for()
        if frozen:
            exit_now(EXIT_FROZEN, "this process stood still for %.1f s (close to the %.0f s session timeout): its "
                     "partitions may belong to another worker now, and nothing would fence what it writes; exiting "
                     "without writing (exit %d) to be restarted and rebuilt from the changelog",
                     frozen, self.s.session_timeout_s, EXIT_FROZEN)

    async def emit(self, out: Output) -> None:
        """Send state and outputs; return only when the broker has acknowledged every record.

        State records go first in the send order of each changelog partition, in the order the Processor lists them
        (the event key last; see the commit order above). Each (topic, partition) gets one record batch
        (outputs.batches).
        """
        self.exit_if_frozen()
        s = self.s
        limit = s.max_message_bytes
        sender = BatchSender(self.app.producer._ensure_producer(), limit)
        changelog = self.store.changelog
        append, headers = sender.append, self.store.headers  # (every state record carries its epoch)
        for partition, key, value in out.state:
            if not append(changelog, partition, key, value, headers[partition]):
                await sender.add(changelog, partition, key, value, headers[partition])
        for dlq_key, record in out.dead_letters:
            dlq_key, value = fit.dead_letter(dlq_key, record, limit)
            await sender.add(s.topic_dlq, await sender.partition_of(s.topic_dlq, dlq_key), dlq_key, value)
        for topic, forwarded in ((s.topic_rekeyed, out.rekeyed), (s.topic_roi_facts, out.roi_facts)):
            for key, value in forwarded:
                await sender.add(topic, partition_for(key, self.partitions), key, value)
        for topic, records in ((s.topic_minute, out.minutes), (s.topic_summary, out.summaries),
                               (s.topic_live, out.live), (s.topic_roi, out.roi), (s.topic_leads, out.leads)):
            for record in records:
                key = lead_key(record["event_id"], record["attendee_id"]) if topic == s.topic_leads else \
                    record["event_id"].encode()
                partition, value = await sender.partition_of(topic, key), orjson.dumps(record)
                if fit.record_bytes(key, value) > limit:  # never sent as is (outputs/fit.py)
                    fitted = fit.summary(key, record, limit) if topic == s.topic_summary else None
                    oversized = self.processor.counters.oversized
                    oversized[topic] = oversized.get(topic, 0) + 1
                    if fitted is None:
                        letter = fit.output_too_large(topic, partition, key, value, limit, int(time.time() * 1000))
                        dlq_key, value = fit.dead_letter(key, letter, limit)
                        await sender.add(s.topic_dlq, await sender.partition_of(s.topic_dlq, dlq_key), dlq_key,
                                         value)
                        continue
                    value = fitted
                await sender.add(topic, partition, key, value)
        for event_id, attendee_id in out.lead_tombstones:  # erasure (docs/data-protection.md)
            key = lead_key(event_id, attendee_id)
            await sender.add(s.topic_leads, await sender.partition_of(s.topic_leads, key), key, None)
        self.exit_if_frozen()  # again: adding may have waited (the last moment before the bulk of the sends)
        sent = await sender.flush()
        if not sent:
            return
        results = await asyncio.gather(*(batch.future for batch in sent))  # raises if a send failed: see or_exit
        # Written anywhere but right after our previous write, a changelog batch means another worker owns the
        # partition now, or wrote to it (state/fencing.py): this worker's state is not the changelog's any more.
        # Replays drop what an older epoch wrote after a newer one's claim; the local store must not take it.
        self.exit_if_frozen()
        for batch, meta in zip(sent, results):
            if batch.topic == changelog and not self.store.follows_last_write(batch.partition, meta.offset):
                exit_now(EXIT_FENCED, "changelog %s[%d]: this worker's write landed at %d, not right after its "
                         "previous one (%d): another worker wrote to the partition (or the broker lost the "
                         "changelog); exiting without writing locally (exit %d) to be restarted and rebuilt from the changelog", changelog,
                         batch.partition, meta.offset, self.store.last_written.get(batch.partition, -1),
                         EXIT_FENCED)
            if batch.topic == changelog:
                self.store.last_written[batch.partition] = meta.offset + batch.count - 1
        # The local store only ever holds what the changelog holds: written before the acknowledgement, a crash in
        # between would leave RocksDB ahead of the changelog, and the replayed batch would find its records
        # already applied and emit none of the outputs that were never sent.
        self.store.write(out.state)
        for batch, meta in zip(sent, results):
            if batch.topic == changelog:
                self.store.changelog_written(batch.partition, meta.offset + batch.count - 1)


# ---------------------------------------------------------------------- topics
def input_topics(settings: Settings) -> tuple[str, ...]:
    """The topics the worker consumes (co-partitioned: one event's records share a partition number)."""
    return (settings.topic_interactions, settings.topic_events, settings.topic_rekeyed,
            settings.topic_opportunities, settings.topic_roi_facts, settings.topic_erasure)


async def prepare_topics(settings: Settings) -> int:
    """Create missing topics and return N, the partition count every source topic and the changelog share.

    The interactions topic decides N (an operator may have created it with any count); the other source topics
    and the changelog must be co-partitioned with it, or one event's records would land on different workers.
    """
    await kafka.wait_for_broker(settings, timeout=settings.startup_wait_s)
    configs = topic_configs(settings)  # retention and compaction (docs/data-protection.md)
    counts = await kafka.ensure_topics(settings, {settings.topic_interactions: settings.partitions}, configs=configs)
    n = counts[settings.topic_interactions]
    co_partitioned = {t: n for t in (settings.topic_events, settings.topic_rekeyed, settings.topic_opportunities,
                                     settings.topic_roi_facts, settings.topic_erasure,
                                     changelog_topic(settings.app_id))}
    outputs = {t: n for t in (settings.topic_dlq, settings.topic_minute, settings.topic_live,
                              settings.topic_summary, settings.topic_leads, settings.topic_roi)}
    counts = await kafka.ensure_topics(settings, {**co_partitioned, **outputs}, configs=configs)
    wrong = {t: counts[t] for t in co_partitioned if counts[t] != n}
    if wrong:
        raise click.ClickException(
            f"topics must be co-partitioned with {settings.topic_interactions} ({n} partitions), but {wrong}; "
            "recreate them with the same partition count"
        )
    return n


# ---------------------------------------------------------------------- the Faust app
def _credentials(settings: Settings) -> Any:
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka.ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=settings.sasl_username, password=settings.sasl_password_value(),
                                     mechanism=settings.sasl_mechanism or "PLAIN", ssl_context=context)
    return faust.SSLCredentials(context)


def build_app(settings: Settings, partitions: int) -> tuple[faust.App, Worker]:
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        broker_credentials=_credentials(settings),
        env={},  # configuration comes from Settings only, not from Faust's own environment variables
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.data_dir),
        topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        consumer_group_instance_id=settings.group_instance_id,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 6),
        broker_rebalance_timeout=max(10.0, settings.session_timeout_s * 2),
        stream_buffer_maxsize=2 * settings.batch_max_records,  # a batch must fit, or Faust pauses partitions
        # No standby replicas: faust-streaming's fetch loop drops records of partitions it considers paused
        # without seeking back, which leaves holes in a standby copy that a takeover would then trust. A worker
        # that gains a partition replays its changelog instead (RocksDB: from the offset its own files hold).
        table_standby_replicas=0,
        producer_max_batch_size=MAX_BATCH_BYTES,  # the size of the record batches outputs.batches builds
        broker_max_poll_records=settings.batch_max_records,  # one poll is one batch (ingest.batch_fetch)
        web_enabled=True,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host="127.0.0.1" if settings.web_host in ("0.0.0.0", "::") else settings.web_host,
        web_router_enabled=False,
        web_tables_enabled=False,
        autodiscover=False,
    )
    source = app.topic(*input_topics(settings), key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")
    store_options = {"write_buffer_size": ROCKSDB_WRITE_BUFFER_BYTES} if settings.store == "rocksdb" else None
    table = app.tables.add(StateTable(app, name=TABLE_NAME, beacon=app.tables.beacon, key_type=bytes,
                                      value_type=bytes, partitions=partitions, default=None, options=store_options))
    use_true_end_recovery(app, settings)
    worker = Worker(app, settings, partitions, table)
    worker.freeze.start()

    @app.agent(source)
    async def process(stream: faust.StreamT) -> None:
        # Input normally arrives through ingest.batch_fetch (below), not through this stream; the agent subscribes
        # the consumer to the input topics and stays the path of anything Faust itself delivers.
        async for events in stream.take_events(settings.batch_max_records, within=settings.batch_max_wait_s):
            await or_exit(worker.handle([event.message for event in events]))
            # returning to take_events acknowledges the batch; Faust commits acknowledged offsets

    async def handle_polled(polled: dict[Any, list[Any]]) -> None:
        await or_exit(worker.handle_polled(polled))

    worker.positions = batch_fetch.deliver_in_batches(app, worker.source_topics, handle_polled)

    async def on_revoked(sender: faust.App, revoked: set, **kwargs: Any) -> None:
        worker.on_revoked()

    app.on_partitions_revoked.connect(on_revoked)
    consumer_fixes.commit_before_revocation(app, worker.checkpoint)
    consumer_fixes.checkpoint_at_shutdown(app, worker.checkpoint)
    consumer_fixes.shorter_fetch_wait(app, settings.fetch_max_wait_ms)

    @app.timer(interval=tick_interval(settings))
    async def tick() -> None:
        await worker.tick()

    registry = worker_registry(LivePulseCollector(worker.processor, worker.batch_sizes, worker.consumer_lag,
                                                  worker.snapshots, worker.ownership))

    @app.page("/metrics")
    async def metrics(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        # `?name[]=livepulse_interactions_total&name[]=...` returns only those samples, as prometheus_client's own
        # exposition server does: a probe watching one series need not fetch and parse all of them.
        names = request.query.getall("name[]", [])
        source = registry.restricted_registry(names) if names else registry
        return self.bytes(generate_latest(source), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        ok = worker.ready and not app.rebalancing
        body = {"ready": ok, "partitions": sorted(worker.owned), "events": len(worker.processor.events),
                "records_processed": sum(worker.processor.counters.processed.values())}  # (cheap progress)
        return self.json(body, status=200 if ok else 503)

    return app, worker


async def or_exit(batch: Any) -> None:
    """Process a batch, or stop the worker without committing anything of it.

    Faust would restart a crashed agent and acknowledge its batch on the way out (take_events acks in a
    `finally`): the batch would be committed unprocessed. Whoever owns the partitions next processes it again.
    """
    try:
        await batch
    except Exception:  # noqa: BLE001 - exit_now logs it with its traceback
        exit_now(EXIT_BATCH_FAILED, "a batch could not be processed and persisted; exiting without committing it",
                 exc_info=True)


def exit_now(code: int, message: str, *args: Any, exc_info: bool = False) -> None:
    """Log why and end the process at once: no shutdown path of Faust's may commit or write anything more."""
    log.critical(message, *args, exc_info=exc_info)
    logging.shutdown()
    os._exit(code)


def run_worker(settings: Settings) -> None:
    logs.configure(settings, "%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info("connecting to Kafka at %s", kafka.describe(settings))
    try:
        partitions = asyncio.run(prepare_topics(settings))
    except kafka.KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run() closed its loop; Faust needs a current one
    gc.set_threshold(*GC_THRESHOLDS)
    app, _ = build_app(settings, partitions)
    log.info("worker %s: %d partitions, store %s, metrics on http://%s:%d/metrics, %s hot path",
             settings.app_id, partitions, settings.store, settings.web_host, settings.web_port, hot_path())
    app.finalize()
    app.worker_init()
    app.worker_init_post_autodiscover()
    try:
        faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False).execute_from_commandline()
    except asyncio.CancelledError:
        # Faust restarts its fetcher after a rebalance by crashing it; now and then (a fetcher its supervisor no
        # longer holds) that crash reaches the worker, which stops. Nothing uncommitted was marked done (commit
        # order): a restart is all it takes, so ask for one like any other temporary fault.
        exit_now(EXIT_FAUST_RESTART, "Faust stopped this worker after cancelling its fetcher in a rebalance; "
                 "exiting (exit %d) to be restarted", EXIT_FAUST_RESTART, exc_info=True)


@click.command("worker")
@click.option("--broker", help="Bootstrap servers, kafka://host:port[,...] [env LIVEPULSE_BROKER].")
@click.option("--web-port", type=int, help="Port of /metrics and /health [env LIVEPULSE_WEB_PORT, 6066].")
@click.option("--data-dir", type=click.Path(), help="Local state directory [env LIVEPULSE_DATA_DIR].")
@click.option("--store", type=click.Choice(["memory", "rocksdb"]), help="Table store [env LIVEPULSE_STORE].")
@click.option("--partitions", type=int, help="Partitions of topics LivePulse creates [env LIVEPULSE_PARTITIONS].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log level [env LIVEPULSE_LOG_LEVEL].")
def worker_command(**flags: Any) -> None:
    """Run a LivePulse worker (several workers with the same app id share the partitions)."""
    run_worker(Settings(**{k: v for k, v in flags.items() if v is not None}))
