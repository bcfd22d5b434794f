"""Several real workers in one consumer group on the embedded broker: scale-out, a crash nobody restarts,
graceful shutdown and rolling restarts, and a broker that is late or restarts.

Every test compares what the workers publish (summaries, leads, minute windows on the output topics, and the
event series of /metrics aggregated like the dashboards do: `max by (event_id)`) with the batch reference
(tests/reference.py). Figures (rebalance, recovery and shutdown durations) are recorded with `record_property`
(in the JUnit XML) and printed (`pytest -rP` or `-s` shows them); nothing asserts on timing, every wait is
bounded and says what it waited for.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable

import pytest

from streams.broker import EmbeddedBroker, free_port
from tests.integration.harness import (
    Pipeline,
    WorkerProcess,
    consume,
    decoded,
    produce,
    wait_until,
)
from tests.integration.test_worker_reference import (
    _as_sim,
    check_topics,
    expected_of,
    scenario,
)
from tests.reference import assert_same

pytestmark = pytest.mark.integration

# Short group timeouts so a dead member's partitions move on quickly (the rebalance timeout stays at its 10 s
# floor, see streams/app.py); live snapshots every second keep the /metrics views fresh.
FAST = {"LIVEPULSE_SESSION_TIMEOUT_S": "3", "LIVEPULSE_SNAPSHOT_INTERVAL_S": "1"}


# ---------------------------------------------------------------------------------------------- helpers
def report(record_property, name: str, value: float | str) -> None:
    """A figure for the test report: JUnit property + a printed line."""
    record_property(name, value)
    print(f"[scale-out] {name} = {value}")


def health(worker: WorkerProcess) -> dict | None:
    """/health body ({"ready", "partitions", "events"}) whatever the status; None if the worker does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/health", timeout=2) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:  # 503 while rebalancing / recovering
        try:
            return json.loads(exc.read())
        except ValueError:
            return None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def assignment(workers: Iterable[WorkerProcess], partitions: int) -> dict[str, list[int]] | None:
    """{worker: partitions} when every worker is ready and together they own each partition exactly once."""
    owned = {}
    for w in workers:
        if w.proc is None or w.proc.poll() is not None:
            raise AssertionError(f"worker {w.name} exited with {w.proc.returncode if w.proc else None}:\n"
                                 f"{w.log_tail()}")
        h = health(w)
        if not h or not h["ready"]:
            return None
        owned[w.name] = h["partitions"]
    flat = sorted(p for ps in owned.values() for p in ps)
    return owned if flat == list(range(partitions)) else None


def wait_settled(workers: list[WorkerProcess], partitions: int, timeout: float = 90.0,
                 restart_asked: bool = False) -> dict[str, list[int]]:
    """Wait until the group is stable: the same complete, disjoint assignment seen twice 1.5 s apart.
    `restart_asked`: restart a worker that exits 75 (asks its supervisor for a restart) meanwhile."""
    def stable():
        if restart_asked:
            for w in workers:
                if w.proc is not None and w.proc.poll() == 75:
                    w.start()
        first = assignment(workers, partitions)
        if first is None:
            return None
        time.sleep(1.5)
        return first if assignment(workers, partitions) == first else None

    return wait_until(stable, timeout=timeout, interval=0.3,
                      what=f"{[w.name for w in workers]} to share {partitions} partitions, each exactly once")


def event_series(worker: WorkerProcess) -> dict[tuple, float]:
    """The worker's samples that carry an event_id label."""
    return {k: v for k, v in worker.metrics().items() if dict(k[1]).get("event_id")}


def events_shown(series: dict[tuple, float], roi: bool = False) -> set[str]:
    return {dict(k[1])["event_id"] for k in series if k[0].startswith("livepulse_roi_") == roi}


def counter(worker: WorkerProcess, name: str) -> float:
    return sum(v for (n, _), v in worker.metrics().items() if n == name)


def processed(worker: WorkerProcess) -> float:
    return counter(worker, "livepulse_records_processed_total")


def feed(pipe: Pipeline, records) -> None:
    s = pipe.settings
    names = {"interactions": s.topic_interactions, "events": s.topic_events}
    asyncio.run(produce(pipe.broker, [(names[r.topic], r.key, r.value) for r in records]))


def feed_sentinels(pipe: Pipeline, sentinels) -> None:
    asyncio.run(produce(pipe.broker, [(pipe.settings.topic_interactions, k, v) for k, v in sentinels]))


def outputs_of(pipe: Pipeline, n_events: int, timeout: float = 120.0) -> dict[str, list[dict]]:
    """Summary, leads and minute topics read from the start, once every event has a summary (+ a second pass:
    leads follow their summary in the same batch of sends)."""
    s = pipe.settings
    topics = [s.topic_summary, s.topic_leads, s.topic_minute]

    def done(r):
        return len({m["event_id"] for m in decoded(r[s.topic_summary])}) >= n_events

    asyncio.run(consume(pipe.broker, topics, until=done, timeout=timeout))
    time.sleep(1.0)
    got = asyncio.run(consume(pipe.broker, topics, until=done, timeout=timeout))
    return {t: decoded(v) for t, v in got.items()}


def check_metrics(per_worker: dict[str, dict[tuple, float]], expected) -> None:
    """Event series aggregated over the workers with max by (event_id) equal the reference's, series for series."""
    combined: dict[tuple, float] = {}
    for series in per_worker.values():
        for key, value in series.items():
            if not key[0].startswith("livepulse_roi_"):
                combined[key] = max(combined.get(key, value), value)
    for event_id, result in expected.items():
        shown = {k: v for k, v in combined.items() if dict(k[1])["event_id"] == event_id}
        assert set(shown) == set(result.metrics), f"metrics[{event_id}] series: {set(shown) ^ set(result.metrics)}"
        for key, value in result.metrics.items():
            assert_same(shown[key], value, f"metrics[{event_id}]{key}")


def assert_exported_once(per_worker: dict[str, dict[tuple, float]]) -> None:
    """No event's series (nor its ROI series) is exported by two workers."""
    for roi in (False, True):
        seen: dict[str, str] = {}
        for name, series in per_worker.items():
            for event_id in events_shown(series, roi):
                assert event_id not in seen, (f"{'ROI ' if roi else ''}series of {event_id} exported by both "
                                              f"{seen[event_id]} and {name}")
                seen[event_id] = name


def sigterm(worker: WorkerProcess, timeout: float = 45.0) -> tuple[int, float]:
    """SIGTERM and wait (bounded) for the exit; returns (exit code, seconds to exit)."""
    assert worker.proc is not None and worker.proc.poll() is None, f"worker {worker.name} is not running"
    t0 = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    try:
        code = worker.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        worker.proc.wait(10)
        raise AssertionError(f"worker {worker.name} still running {timeout} s after SIGTERM:\n"
                             f"{worker.log_tail()}") from None
    return code, time.monotonic() - t0


def stop_all(workers: Iterable[WorkerProcess]) -> None:
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    for w in workers:
        w.stop(signal.SIGKILL, timeout=20)


def split(records: list, parts: int) -> list[list]:
    size = -(-len(records) // parts)
    return [records[i:i + size] for i in range(0, len(records), size)]


# ---------------------------------------------------------------------------------------------- 1. scale-out
def test_three_workers_share_the_partitions_and_together_equal_the_reference(broker, tmp_path, record_property):
    """One worker takes the first third of a 12-event webinar day alone; two more join (each rebalance moves
    partitions, and with them events, away from w1); the rest is processed by the three. The group's outputs and
    its /metrics (max by event_id, counters summed) equal the reference; after the rebalances every event is
    exported by exactly one worker, the one that owns its partition."""
    partitions = 6
    pipe = Pipeline(broker, tmp_path, partitions=partitions, extra_env=FAST)
    raw, sentinels = scenario(seed=5, events=12, partitions=partitions)
    expected = expected_of(raw, sentinels, pipe.settings)
    sim = _as_sim(raw)
    first, rest = sim[: len(sim) // 3], sim[len(sim) // 3:]
    workers = [WorkerProcess(pipe, name=f"w{i}") for i in (1, 2, 3)]
    try:
        workers[0].start()
        wait_settled(workers[:1], partitions)
        feed(pipe, first)
        wait_until(lambda: processed(workers[0]) >= len(first), timeout=60, what="w1 processing the first third")
        seen_first = {r.key.decode() for r in first}
        wait_until(lambda: events_shown(event_series(workers[0])) == seen_first, timeout=20,
                   what="w1 alone exporting every event it has seen (next live snapshot)")

        t0 = time.monotonic()
        for w in workers[1:]:
            w.start()
        owned = wait_settled(workers, partitions)
        report(record_property, "rebalance_to_three_workers_s", round(time.monotonic() - t0, 1))
        report(record_property, "assignment", str(owned))
        assert sum(bool(ps) for ps in owned.values()) >= 2, f"partitions spread over >= 2 workers: {owned}"

        feed(pipe, rest)
        feed_sentinels(pipe, sentinels)
        outputs = outputs_of(pipe, len(expected))
        check_topics(pipe, outputs, expected)

        # Metrics: give the timers a snapshot after the summaries, then compare the group's view.
        time.sleep(2.0)
        assert wait_settled(workers, partitions) == owned, "no rebalance while the rest was processed"
        per_worker = {w.name: event_series(w) for w in workers}
        shown = {name: events_shown(series) for name, series in per_worker.items()}
        report(record_property, "events_per_worker", str({n: len(e) for n, e in shown.items()}))
        assert sum(bool(e) for e in shown.values()) >= 2, f"events spread over >= 2 workers: {shown}"
        assert_exported_once(per_worker)
        # each worker exports exactly the events of the partitions it owns now (w1 dropped what it handed over)
        home = {r.key.decode(): r.partition for r in raw}
        for w in workers:
            assert shown[w.name] == {e for e in expected if home[e] in owned[w.name]}, \
                f"{w.name} owns partitions {owned[w.name]} but exports {sorted(shown[w.name])}"
        check_metrics(per_worker, expected)

        fed_by_topic = {pipe.settings.topic_interactions: sum(r.topic == "interactions" for r in sim) + len(sentinels),
                        pipe.settings.topic_events: sum(r.topic == "events" for r in sim)}
        for topic, n in fed_by_topic.items():
            got = sum(v for w in workers for (name, labels), v in w.metrics().items()
                      if name == "livepulse_records_processed_total" and dict(labels)["topic"] == topic)
            assert got == n, f"records processed from {topic} summed over the workers: {got}, fed {n}"
        assert sum(counter(w, "livepulse_redelivered_records_total") for w in workers) == 0, \
            "a clean rebalance replays nothing (offsets committed on revocation: streams/app.py commit_before_revocation)"
        assert sum(counter(w, "livepulse_duplicates_dropped_total") for w in workers) == \
            sum(r.duplicates for r in expected.values())
        assert sum(counter(w, "livepulse_late_records_total") for w in workers) == sum(r.late for r in expected.values())
    finally:
        stop_all(workers)


# ---------------------------------------------------------------------------------------------- 2. crash, no restart
def test_killed_worker_not_restarted_its_partitions_move_to_the_survivors(broker, tmp_path, record_property):
    """kill -9 one of three workers in the middle of the webinars and never bring it back: after the session
    timeout the survivors are assigned its partitions, rebuild its events from the changelog and carry on; every
    final number equals the reference."""
    partitions = 6
    pipe = Pipeline(broker, tmp_path, partitions=partitions, extra_env=FAST)
    raw, sentinels = scenario(seed=8, events=6, partitions=partitions)
    expected = expected_of(raw, sentinels, pipe.settings)
    sim = _as_sim(raw)
    half = len(sim) // 2
    workers = [WorkerProcess(pipe, name=f"w{i}").start() for i in (1, 2, 3)]
    try:
        owned = wait_settled(workers, partitions)
        feed(pipe, sim[:half])
        wait_until(lambda: sum(processed(w) for w in workers) >= half * 0.6, timeout=60,
                   what="60% of the first half being processed")
        # the victim: the worker holding the most events (so the crash really is mid-event)
        victim = max(workers, key=lambda w: (health(w) or {}).get("events", 0))
        survivors = [w for w in workers if w is not victim]
        lost = set(owned[victim.name])
        home = {r.key.decode(): r.partition for r in raw}
        lost_events = {e for e in expected if home[e] in lost}
        assert lost_events, f"{victim.name} owns partitions {sorted(lost)} with events"
        def clocks(ws):
            out = {}
            for w in ws:
                for (name, labels), v in w.metrics().items():
                    if name == "livepulse_event_clock_timestamp_seconds" and dict(labels)["event_id"] in lost_events:
                        out[dict(labels)["event_id"]] = v
            return out

        at_kill = clocks([victim])
        victim.stop(signal.SIGKILL)
        t_kill = time.monotonic()
        feed(pipe, sim[half:])  # the webinars go on while the group notices
        settled = wait_settled(survivors, partitions, timeout=90)
        t_taken = time.monotonic() - t_kill
        wait_until(lambda: any(v > at_kill.get(e, 0) for e, v in clocks(survivors).items()), timeout=60,
                   what=f"an event of {sorted(lost_events)} progressing past its clock at the kill on a survivor")
        t_progress = time.monotonic() - t_kill
        report(record_property, "victim", f"{victim.name} partitions {sorted(lost)} events {sorted(lost_events)}")
        report(record_property, "kill_to_partitions_reassigned_and_restored_s", round(t_taken, 1))
        report(record_property, "kill_to_lost_events_progressing_s", round(t_progress, 1))
        report(record_property, "assignment_after", str(settled))

        feed_sentinels(pipe, sentinels)
        check_topics(pipe, outputs_of(pipe, len(expected)), expected)
        time.sleep(2.0)
        per_worker = {w.name: event_series(w) for w in survivors}
        assert_exported_once(per_worker)
        check_metrics(per_worker, expected)
        replayed = sum(counter(w, "livepulse_redelivered_records_total") for w in survivors)
        report(record_property, "records_replayed_after_the_kill", replayed)
    finally:
        stop_all(workers)


def test_paused_worker_that_comes_back_does_not_corrupt_the_state_it_lost(broker, tmp_path, record_property):
    """A slow consumer at its worst: one of two workers freezes (SIGSTOP, like a long GC pause or a starved VM)
    beyond the session timeout while the webinars go on, so the other takes over its partitions; then it wakes
    up (SIGCONT), possibly in the middle of a batch. Nothing fences it (no transactions), so it must notice the
    freeze itself and exit 75 without writing anything; restarted (as its supervisor would), it rejoins. To prove
    that nothing it wrote corrupted the state it lost, the worker that took over is then killed, and the restarted
    one rebuilds every event from the changelog. Every final number equals the reference."""
    partitions = 6
    pipe = Pipeline(broker, tmp_path, partitions=partitions, extra_env=FAST)
    raw, sentinels = scenario(seed=21, events=6, partitions=partitions)
    expected = expected_of(raw, sentinels, pipe.settings)
    first, second, third = split(_as_sim(raw), 3)
    w1, w2 = (WorkerProcess(pipe, name=f"w{i}").start() for i in (1, 2))
    try:
        wait_settled([w1, w2], partitions)
        feed(pipe, first)
        wait_until(lambda: processed(w1) + processed(w2) >= len(first) * 0.6, timeout=60,
                   what="60% of the first third being processed")
        w1.proc.send_signal(signal.SIGSTOP)
        t_pause = time.monotonic()
        feed(pipe, second)
        wait_settled([w2], partitions, timeout=90)
        report(record_property, "pause_to_takeover_s", round(time.monotonic() - t_pause, 1))
        w1.proc.send_signal(signal.SIGCONT)
        code = wait_until(lambda: w1.proc.poll() is not None and str(w1.proc.returncode), timeout=30,
                          what="the woken worker exiting")
        assert code == "75", f"the woken worker exited with {code}:\n{w1.log_tail()}"
        assert "this process stood still for" in w1.log_path.read_text(errors="replace")
        w1.start()  # same name, same data dir: as a restarted pod or unit
        feed(pipe, third[: len(third) // 2])
        # Records w1's producer had queued when it froze reach w2's partitions when it wakes: w2 then finds a
        # write of another worker in its changelog and asks for a restart too (state/fencing.py).
        settled = wait_settled([w1, w2], partitions, timeout=90, restart_asked=True)
        report(record_property, "assignment_after_wake_up", str(settled))
        w2.stop(signal.SIGKILL)
        feed(pipe, third[len(third) // 2:])
        wait_settled([w1], partitions, timeout=90)
        feed_sentinels(pipe, sentinels)
        check_topics(pipe, outputs_of(pipe, len(expected)), expected)
        time.sleep(2.0)
        check_metrics({w1.name: event_series(w1)}, expected)
    finally:
        for w in (w1, w2):
            if w.proc and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
        stop_all([w1, w2])


# ---------------------------------------------------------------------------------------------- 3. graceful shutdown
def test_sigterm_exits_cleanly_and_a_rolling_restart_changes_nothing(broker, tmp_path, record_property):
    """Three workers; between four slices of the webinars each worker in turn gets SIGTERM (it must exit 0), and
    is started again once the others have taken over. A stopped worker has committed what it processed: summed
    over every incarnation, each input record was processed exactly once (nothing replayed, nothing redelivered),
    and the final outputs and /metrics equal the reference. With checkpoints every second rather than after every
    poll: what was processed since the last must be checkpointed when partitions are revoked and at shutdown."""
    partitions = 6
    pipe = Pipeline(broker, tmp_path, partitions=partitions, extra_env={**FAST, "LIVEPULSE_CHECKPOINT_INTERVAL_S": "1"})
    raw, sentinels = scenario(seed=13, events=6, partitions=partitions)
    expected = expected_of(raw, sentinels, pipe.settings)
    sim = _as_sim(raw)
    slices = split(sim, 4)
    workers = [WorkerProcess(pipe, name=f"w{i}").start() for i in (1, 2, 3)]
    done = 0.0  # records processed by incarnations that have exited
    fed = 0
    try:
        wait_settled(workers, partitions)
        for i, chunk in enumerate(slices):
            feed(pipe, chunk)
            fed += len(chunk)
            wait_until(lambda target=fed - done: sum(processed(w) for w in workers) >= target, timeout=60,
                       what=f"slice {i} being processed")
            if i == len(slices) - 1:
                break
            w = workers[i]
            count = processed(w)
            assert counter(w, "livepulse_redelivered_records_total") == 0, f"{w.name} replayed records"
            code, took = sigterm(w)
            report(record_property, f"sigterm_{w.name}_exit_s", round(took, 1))
            assert code == 0, f"{w.name} exited with {code} after SIGTERM:\n{w.log_tail()}"
            done += count
            t0 = time.monotonic()
            wait_settled([x for x in workers if x is not w], partitions)
            report(record_property, f"takeover_after_{w.name}_left_s", round(time.monotonic() - t0, 1))
            t0 = time.monotonic()
            w.start()  # same name: same data dir, as a restarted pod or unit would have
            wait_settled(workers, partitions)
            report(record_property, f"rejoin_{w.name}_s", round(time.monotonic() - t0, 1))
        feed_sentinels(pipe, sentinels)
        fed += len(sentinels)
        check_topics(pipe, outputs_of(pipe, len(expected)), expected)
        time.sleep(2.0)
        per_worker = {w.name: event_series(w) for w in workers}
        assert_exported_once(per_worker)
        check_metrics(per_worker, expected)
        total = done + sum(processed(w) for w in workers)
        tails = [counter(w, "livepulse_redelivered_records_total") for w in workers]
        assert sum(tails) == 0, f"records redelivered after the restarts: {tails}"
        # roi.facts records are LivePulse's own (summary -> facts): count only the inputs we fed
        inputs = done + sum(v for w in workers for (n, labels), v in w.metrics().items()
                            if n == "livepulse_records_processed_total"
                            and dict(labels)["topic"] in (pipe.settings.topic_interactions, pipe.settings.topic_events))
        assert inputs == fed, f"processed {inputs} input records over all incarnations, fed {fed} (total {total})"
    finally:
        stop_all(workers)


# ---------------------------------------------------------------------------------------------- 4. broker trouble
def log_text(worker: WorkerProcess) -> str:
    try:
        return worker.log_path.read_text(errors="replace")
    except OSError:
        return ""


def test_worker_started_before_the_broker_waits_and_then_processes(tmp_path, record_property):
    """No broker yet on the configured port: the worker stays up and says every few seconds what it waits for
    (streams/kafka.py wait_for_broker, LIVEPULSE_STARTUP_WAIT_S); once the broker is there it creates its topics,
    becomes healthy and its outputs equal the reference."""
    port = free_port()
    pipe = Pipeline(f"kafka://127.0.0.1:{port}", tmp_path, partitions=2,
                    extra_env={**FAST, "LIVEPULSE_STARTUP_WAIT_S": "120"})
    embedded = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
    worker = WorkerProcess(pipe).start()
    try:
        wait_until(lambda: log_text(worker).count("waiting for Kafka at") >= 2, timeout=30,
                   what="two 'waiting for Kafka' lines (one every 5 s)")
        assert worker.proc.poll() is None, f"the worker gave up:\n{worker.log_tail()}"
        line = next(x for x in log_text(worker).splitlines() if "waiting for Kafka at" in x)
        report(record_property, "waiting_line", line.split(" WARNING ", 1)[-1])
        assert f"127.0.0.1:{port}" in line and ("refused" in line.lower() or "Errno" in line), line
        t0 = time.monotonic()
        embedded.start()
        worker.wait_ready(timeout=60)
        report(record_property, "broker_up_to_worker_healthy_s", round(time.monotonic() - t0, 1))
        assert log_text(worker).count("connecting to Kafka at") == 1, "one process, no restart loop"
        raw, sentinels = scenario(seed=3, events=2, partitions=2)
        expected = expected_of(raw, sentinels, pipe.settings)
        feed(pipe, _as_sim(raw))
        feed_sentinels(pipe, sentinels)
        check_topics(pipe, outputs_of(pipe, len(expected)), expected)
    finally:
        worker.stop()
        embedded.stop()


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_memory_broker_restart_is_a_new_cluster(tmp_path, record_property, store):
    """The embedded broker keeps everything in memory: restarting it mid-stream gives a new, empty cluster on the
    same address (no topics, no committed offsets, no changelog). What a worker does then, by store:

    - rocksdb: it reconnects, rejoins, finds its local state ahead of the (empty) changelog and stops with exit
      code 1 and Faust's ConsistencyError ("persisted offset ... higher than the last offset in that topic ...
      removed data from the topics without removing the RocksDB database"): loud, needs the data dir wiped.
    - memory: it reconnects and rejoins; its next state write lands at the start of the new, empty changelog
      instead of right after its previous one, so it stops with exit code 75 (streams/state/fencing.py) rather
      than carry on with events the new changelog does not have.
    Either way the new cluster is not the old one: treat a broker reset as a new deployment (wipe data dirs).
    """
    port = free_port()
    pipe = Pipeline(f"kafka://127.0.0.1:{port}", tmp_path, partitions=2, extra_env={**FAST, "LIVEPULSE_STORE": store})
    embedded = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log").start()
    worker = WorkerProcess(pipe).start()
    try:
        worker.wait_ready()
        raw, _ = scenario(seed=4, events=2, partitions=2)
        sim = _as_sim(raw)
        half = len(sim) // 2
        feed(pipe, sim[:half])
        wait_until(lambda: processed(worker) >= half, timeout=60, what="the first half being processed")
        embedded.stop()
        t0 = time.monotonic()
        embedded.start()
        if store == "rocksdb":
            code = wait_until(lambda: worker.proc.poll() is not None and str(worker.proc.returncode), timeout=45,
                              what="the rocksdb worker to stop on the emptied changelog")
            report(record_property, f"{store}_exit_after_broker_reset", f"code {code} after "
                                                                        f"{time.monotonic() - t0:.1f} s")
            assert code == "1", worker.log_tail()
            assert "ConsistencyError" in log_text(worker) and "changelog" in log_text(worker), worker.log_tail()
            return

        # Input longer than the old logs reaches the worker past the positions it kept: it processes, writes state
        feed(pipe, sim)
        code = wait_until(lambda: worker.proc.poll() is not None and str(worker.proc.returncode), timeout=45,
                          what="the memory worker to stop at its first write to the emptied changelog")
        report(record_property, f"{store}_exit_after_broker_reset", f"code {code} after "
                                                                    f"{time.monotonic() - t0:.1f} s")
        assert code == "75", worker.log_tail()
        assert "or the broker lost the changelog" in log_text(worker), worker.log_tail()
    finally:
        worker.stop()
        embedded.stop()
