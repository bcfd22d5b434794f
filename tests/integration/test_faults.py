"""Random freezes, kills and restarts of two or three workers during live webinars: every final number equals
the batch reference.

A seed draws a fault schedule: between chunks of input, a worker is frozen (SIGSTOP, often beyond the session
timeout while the others take its partitions over), woken (SIGCONT), killed (SIGKILL) and left down for a while,
started again, or stopped (SIGTERM) and started again. A supervisor restarts every worker that exits by itself
(exit 75: it stood still too long or found another worker's writes in its changelog), as systemd or Kubernetes
would. Nothing fences a frozen worker on the embedded broker: whatever it still writes when it wakes must change
no final number (streams/state/fencing.py). The default suite runs a few seeds; `make soak` runs many more.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time

import pytest
from aiokafka import AIOKafkaProducer

from streams.state.fencing import epoch_headers
from streams.state.store import changelog_topic
from tests.integration.harness import Pipeline, WorkerProcess, wait_until
from tests.integration.test_scale_out import (
    FAST,
    assert_exported_once,
    assignment,
    check_metrics,
    event_series,
    feed,
    feed_sentinels,
    outputs_of,
    processed,
    report,
    sigterm,
    split,
    stop_all,
    wait_settled,
)
from tests.integration.test_worker_reference import _as_sim, check_topics, expected_of, scenario

pytestmark = pytest.mark.integration

PARTITIONS = 6
EXIT_RESTART = 75  # the worker asks its supervisor for a restart (streams/app.py EXIT_FROZEN, EXIT_FENCED)


class Group:
    """The workers and what the schedule did to them; `supervise` restarts those that exited by themselves."""

    def __init__(self, pipe: Pipeline, n: int) -> None:
        self.workers = [WorkerProcess(pipe, name=f"w{i}") for i in range(1, n + 1)]
        self.frozen: set[str] = set()
        self.down: set[str] = set()  # killed by the schedule, kept down until it starts them
        self.restarts = 0

    def running(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.name not in self.down | self.frozen]

    def supervise(self) -> None:
        for w in self.workers:
            if w.name in self.down or w.proc is None or w.proc.poll() is None:
                continue
            code = w.proc.returncode
            assert code in (EXIT_RESTART, 0), f"worker {w.name} exited with {code}:\n{w.log_tail(80)}"
            self.frozen.discard(w.name)
            w.start()
            self.restarts += 1

    def act(self, rng: random.Random) -> str:
        """One fault on one worker, drawn among those that apply to its state."""
        w = rng.choice(self.workers)
        if w.name in self.down:
            w.start()
            self.down.discard(w.name)
            return f"start {w.name}"
        if w.name in self.frozen:
            action = rng.choice(["cont", "cont", "kill"])
        else:
            action = rng.choice(["stop", "stop", "kill", "term"])
        if action == "stop":
            w.proc.send_signal(signal.SIGSTOP)
            self.frozen.add(w.name)
        elif action == "cont":
            w.proc.send_signal(signal.SIGCONT)
            self.frozen.discard(w.name)
        elif action == "kill":
            w.stop(signal.SIGKILL)
            self.frozen.discard(w.name)
            self.down.add(w.name)
        else:
            w.stop(signal.SIGTERM, timeout=45)
            w.start()
        return f"{action} {w.name}"

    def heal(self, timeout: float = 120.0) -> dict[str, list[int]]:
        """Wake and start everyone, then wait until the group owns every partition once, all ready."""
        for w in self.workers:
            if w.name in self.frozen:
                w.proc.send_signal(signal.SIGCONT)
            if w.name in self.down:
                w.start()
        self.frozen.clear()
        self.down.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervise()
            try:
                owned = assignment(self.workers, PARTITIONS)
            except AssertionError:  # one exited since: the supervisor restarts it
                owned = None
            if owned is not None:
                return owned
            time.sleep(0.5)
        raise AssertionError(f"the group did not settle in {timeout} s:\n" +
                             "\n".join(f"--- {w.name}\n{w.log_tail()}" for w in self.workers))


def run_schedule(broker: str, tmp_path, record_property, seed: int, workers: int, steps: int = 6) -> None:
    rng = random.Random(seed)
    pipe = Pipeline(broker, tmp_path, partitions=PARTITIONS, extra_env=FAST)
    raw, sentinels = scenario(seed=seed, events=6, partitions=PARTITIONS)
    expected = expected_of(raw, sentinels, pipe.settings)
    group = Group(pipe, workers)
    schedule = []
    try:
        for w in group.workers:
            w.start()
        group.heal()
        for chunk in split(_as_sim(raw), steps):
            schedule.append(group.act(rng))
            feed(pipe, chunk)
            # up to ~2 session timeouts: a freeze may outlast the session (takeover) or not
            time.sleep(rng.uniform(0.5, 6.0))
            group.supervise()
        report(record_property, "schedule", "; ".join(schedule))
        owned = group.heal()
        report(record_property, "assignment_at_the_end", str(owned))
        feed_sentinels(pipe, sentinels)
        check_topics(pipe, outputs_of(pipe, len(expected)), expected)
        group.heal()  # (a worker that woke up last may have exited since)
        time.sleep(2.0)
        per_worker = {w.name: event_series(w) for w in group.workers}
        assert_exported_once(per_worker)
        check_metrics(per_worker, expected)
        report(record_property, "restarts_by_the_supervisor", group.restarts)
    finally:
        for w in group.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
        stop_all(group.workers)


@pytest.mark.parametrize(("seed", "workers"), [(31, 2), (32, 3), (33, 3)])
def test_random_freezes_kills_and_restarts_change_no_final_number(broker, tmp_path, record_property, seed,
                                                                   workers):
    run_schedule(broker, tmp_path, record_property, seed, workers)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(100, 120))
def test_soak_random_freezes_kills_and_restarts(broker, tmp_path, record_property, seed):
    run_schedule(broker, tmp_path, record_property, seed, workers=2 + seed % 2, steps=8)


async def write_as(broker: str, topic: str, partition: int, key: bytes, value: bytes, epoch: int) -> None:
    """A changelog write by a worker of an earlier epoch (what a zombie's producer sends when it wakes)."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.split("://", 1)[-1], acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, partition=partition, headers=epoch_headers(epoch))
    finally:
        await producer.stop()


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_a_superseded_owner_s_write_is_dropped_and_the_worker_it_hits_rebuilds(broker, tmp_path, record_property,
                                                                               store):
    """Deterministic: after a restart has claimed epoch 2 of every changelog partition, a write of epoch 1 (a
    zombie's, here a value that would break any restore that read it) lands in one. The worker's next write there
    lands after it, so it exits 75 without touching its local store; restarted, its recovery drops the stale
    record, and every final number equals the reference."""
    pipe = Pipeline(broker, tmp_path, partitions=PARTITIONS, extra_env={**FAST, "LIVEPULSE_STORE": store})
    raw, sentinels = scenario(seed=41, events=4, partitions=PARTITIONS)
    expected = expected_of(raw, sentinels, pipe.settings)
    first, second = split(_as_sim(raw), 2)
    w = WorkerProcess(pipe, name="w1").start()
    try:
        wait_settled([w], PARTITIONS)
        feed(pipe, first)
        wait_until(lambda: processed(w) >= len(first), timeout=60, what="the first half being processed")
        code, _ = sigterm(w)
        assert code == 0
        w.start()  # claims epoch 2 of every partition it restores
        wait_settled([w], PARTITIONS)
        home = {r.key.decode(): r.partition for r in raw}
        event = next(r.key.decode() for r in second if r.topic == "interactions")
        asyncio.run(write_as(pipe.broker, changelog_topic(pipe.app_id), home[event], f"{event}/".encode(),
                             b"not a state record", epoch=1))
        feed(pipe, second)
        code = wait_until(lambda: w.proc.poll() is not None and str(w.proc.returncode), timeout=60,
                          what="the worker finding another worker's write in its changelog")
        log = w.log_path.read_text(errors="replace")
        assert code == "75", f"exit {code}:\n{w.log_tail(60)}"
        assert "another worker wrote to the partition" in log
        w.start()
        wait_settled([w], PARTITIONS)
        feed_sentinels(pipe, sentinels)
        check_topics(pipe, outputs_of(pipe, len(expected)), expected)
        time.sleep(2.0)
        check_metrics({w.name: event_series(w)}, expected)
    finally:
        stop_all([w])
