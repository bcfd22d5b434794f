"""LivePulse in the benchmark: a real `livepulse worker` process, measured from the outside.

- throughput: poll /health (`records_processed`) until the worker has consumed the workload;
  VmRSS/VmHWM from /proc/<pid>/status and the present attendees (`livepulse_attendees_current`) at each poll;
- outputs: the summaries on the summary topic, to compare with `streams.testing.run_records`;
- freshness: background load at a steady paced rate plus marker chats of a probe event, watched on /metrics and
  on the live topic;
- recovery: SIGKILL, restart on the same data dir, time until /health is 200 and a new marker is processed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams.partitioning import partition_for
from streams.settings import Settings

TOPIC_FIELDS = tuple(f for f in Settings.model_fields if f.startswith("topic_"))
Progress = Callable[[str], None]


class WorkerCrashed(RuntimeError):
    """The worker process exited while it was being measured."""


def topic_names(prefix: str) -> dict[str, str]:
    """Every LivePulse topic of this run: "<prefix>.<default name>" (a run never sees another run's records)."""
    return {f: f"{prefix}.{Settings.model_fields[f].default}" for f in TOPIC_FIELDS}


# Settings the bench gives every worker itself: the run's broker, topics, identity, ports and data dirs, and the
# 1-s snapshot interval the freshness target is defined with.
BENCH_OWNED_SETTINGS = frozenset({"broker", "app_id", "web_host", "web_port", "data_dir", "partitions",
                                  "snapshot_interval_s", "group_instance_id", *TOPIC_FIELDS})


def worker_settings_env(pairs: Sequence[str]) -> dict[str, str]:
    """NAME=VALUE pairs (the settings of docs/configuration.md, with or without LIVEPULSE_) -> the environment of
    the bench's workers. Raises ValueError naming what is wrong; each value is checked as the worker would."""
    from streams.settings import LeadGrades, ScoreWeights

    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().lower().removeprefix("livepulse_")
        if not sep or not name:
            raise ValueError(f"{pair!r}: expected NAME=VALUE, e.g. checkpoint_interval_s=1")
        model, field_name = Settings, name
        for prefix, nested in (("score_", ScoreWeights), ("grade_", LeadGrades)):
            if name.startswith(prefix) and name.removeprefix(prefix) in nested.model_fields:
                model, field_name = nested, name.removeprefix(prefix)
        if field_name not in model.model_fields:
            raise ValueError(f"{pair!r}: no setting {name!r} (docs/configuration.md)")
        if model is Settings and name in BENCH_OWNED_SETTINGS:
            raise ValueError(f"{pair!r}: the bench sets {name} itself")
        try:
            model(**{field_name: value})
        except ValueError as exc:  # pydantic's ValidationError: which value, and why
            raise ValueError(f"{pair!r}: {exc}") from None
        env[f"LIVEPULSE_{name.upper()}"] = value
    return env


@dataclass
class Worker:
    broker: str  # kafka://host:port
    app_id: str
    topics: dict[str, str]
    data_dir: Path
    log_path: Path
    snapshot_interval_s: float = 1.0
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEPULSE_")}
        env.update({f"LIVEPULSE_{f.upper()}": name for f, name in self.topics.items()})
        env.update({"LIVEPULSE_BROKER": self.broker, "LIVEPULSE_APP_ID": self.app_id,
                    "LIVEPULSE_WEB_HOST": "127.0.0.1", "LIVEPULSE_WEB_PORT": str(self.port),
                    "LIVEPULSE_DATA_DIR": str(self.data_dir),
                    "LIVEPULSE_SNAPSHOT_INTERVAL_S": f"{self.snapshot_interval_s:g}",
                    "LIVEPULSE_LOG_LEVEL": "info"})
        env.update(self.extra_env)
        return env

    def start(self) -> Worker:
        from streams.broker import free_port

        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # -P: the streams this interpreter installed (e.g. the compiled build), never a source tree in the cwd.
            self.proc = subprocess.Popen([sys.executable, "-P", "-m", "streams", "worker"], env=self.env(),
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = self.proc.returncode if self.proc else None
            raise WorkerCrashed(f"the worker exited with code {code}; log {self.log_path}:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout: float) -> float | None:
        """Seconds until /health answers 200 (None after timeout); raises WorkerCrashed if the process exits."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            self.check_alive()
            if self.healthy():
                return time.monotonic() - started
            time.sleep(0.1)
        return None

    def health(self) -> dict:
        """The /health body whatever its status (it has the records processed so far: a cheap progress probe)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=10) as r:
                return orjson.loads(r.read())
        except urllib.error.HTTPError as exc:  # 503 while not ready: the body is still there
            return orjson.loads(exc.read())

    def metrics(self, names: Sequence[str] = ()) -> dict[str, dict[tuple, float]]:
        """{sample name: {sorted labels: value}} of one scrape; of just the samples `names` when given."""
        from prometheus_client.parser import text_string_to_metric_families

        query = "?" + urllib.parse.urlencode([("name[]", n) for n in names]) if names else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics{query}", timeout=10) as r:
            text = r.read().decode()
        out: dict[str, dict[tuple, float]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return out

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the worker so far (/proc/<pid>/stat): a rate per CPU second is robust to a
        machine busy with other work, where records per wall second are not."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) in bytes, from /proc/<pid>/status."""
        out = {}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    out[name] = int(rest.split()[0]) * 1024
        except OSError:
            pass
        return out

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def processed_total(m: dict) -> float:
    return sum(m.get("livepulse_records_processed_total", {}).values())


def attendees_current(m: dict) -> float:
    return sum(m.get("livepulse_attendees_current", {}).values())


INTERACTIONS_TOTAL = "livepulse_interactions_total"


def chats_of(m: dict, event_id: str) -> float:
    return m.get(INTERACTIONS_TOTAL, {}).get((("event_id", event_id), ("type", "chat")), 0.0)


# ---------------------------------------------------------------------- throughput
def measure_throughput(worker: Worker, expected: int, *, timeout: float, poll_s: float = 0.1,
                       metrics_every_s: float = 1.0, progress: Progress = print) -> dict:
    """Poll /health until `expected` records are processed. Rate = records between the first poll that saw
    processing and the last one / the time between them (poll granularity: `poll_s`). /metrics (present
    attendees) is read only every `metrics_every_s`: a scrape of 40 events costs the worker milliseconds, and the
    parse costs this process more, both taken from the worker's CPU on a small machine."""
    started = time.monotonic()
    first: tuple[float, float, float | None] | None = None  # (time, processed, CPU s) at the first poll seeing any
    idle: tuple[float, float, float | None] | None = None  # the same at the last poll that saw none
    last: tuple[float, float, float | None] | None = None
    baseline_rss: int | None = None
    peak_present = (0.0, 0, 0.0)  # (present attendees, RSS growth, t)
    samples = []
    last_print = last_scrape = 0.0
    present = 0.0
    while True:
        worker.check_alive()
        now = time.monotonic()
        try:
            done = float(worker.health()["records_processed"])
            if now - last_scrape >= metrics_every_s:
                present, last_scrape = attendees_current(worker.metrics()), now
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            done = None  # not listening yet
        mem = worker.memory()
        if done is not None:
            rss = mem.get("VmRSS", 0)
            if done == 0:
                idle = (now, 0.0, worker.cpu_seconds())
            if done > 0 and first is None:
                first = (now, done, worker.cpu_seconds())
                baseline_rss = rss
            if done > 0:
                last = (now, done, worker.cpu_seconds())
                samples.append({"t": round(now - started, 2), "processed": done, "present": present, "rss": rss})
                growth = rss - (baseline_rss or rss)
                if present > peak_present[0]:
                    peak_present = (present, growth, now)
            if now - last_print >= 5:
                progress(f"  livepulse: {int(done):,}/{expected:,} records processed, rss {rss / 2**20:.0f} MiB")
                last_print = now
            if done >= expected:
                break
        if now - started > timeout:
            progress(f"  livepulse: timed out after {timeout:.0f} s; reporting what was processed")
            break
        time.sleep(poll_s)
    mem = worker.memory()
    records, seconds, cpu = 0.0, 0.0, None
    if first and last and last[0] == first[0] and idle:
        # Everything was processed between two polls (a small workload): measure from the last poll that saw
        # nothing instead, which counts up to one poll interval of idle time too (a lower bound of the rate).
        first = idle
    if first and last and last[0] > first[0]:
        records, seconds = last[1] - first[1], last[0] - first[0]
        if first[2] is not None and last[2] is not None and last[2] > first[2]:
            cpu = last[2] - first[2]
    return {
        "records": int(last[1]) if last else 0,
        "measured_records": int(records),
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds, 1) if seconds > 0 else None,
        "cpu_seconds": None if cpu is None else round(cpu, 2),
        "records_per_cpu_s": None if not cpu else round(records / cpu, 1),
        "complete": bool(last and last[1] >= expected),
        "poll_s": poll_s,
        "rss_baseline_bytes": baseline_rss,
        "rss_end_bytes": mem.get("VmRSS"),
        "peak_rss_bytes": mem.get("VmHWM"),
        "peak_present_attendees": int(peak_present[0]),
        "rss_growth_at_peak_present_bytes": peak_present[1],
        "samples": samples,
    }


# ---------------------------------------------------------------------- outputs
async def read_summaries(bootstrap: str, topic: str, event_ids: set[str], timeout: float) -> dict[str, dict]:
    """The last summary of each event on the summary topic, read until every event has one (or timeout)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    got: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    try:
        while not event_ids <= set(got) and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for msg in messages:
                    summary = orjson.loads(msg.value)
                    got[summary["event_id"]] = summary
    finally:
        await consumer.stop()
    return got


def differences(actual, expected, path: str = "$", tol: float = 1e-9) -> list[str]:
    """Deep comparison (floats within `tol` relative: sums may be taken in another order), as paths that differ."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or actual.keys() != expected.keys():
            return [f"{path}: keys differ"]
        return [d for k in expected for d in differences(actual[k], expected[k], f"{path}.{k}", tol)]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: length differs"]
        return [d for i, (a, e) in enumerate(zip(actual, expected)) for d in differences(a, e, f"{path}[{i}]", tol)]
    if isinstance(expected, float) or isinstance(actual, float):
        ok = isinstance(actual, (int, float)) and isinstance(expected, (int, float)) \
            and abs(actual - expected) <= tol * max(1.0, abs(expected))
        return [] if ok else [f"{path}: {actual!r} != {expected!r}"]
    return [] if actual == expected and type(actual) is type(expected) else [f"{path}: {actual!r} != {expected!r}"]


# ---------------------------------------------------------------------- freshness
async def freshness_probe(worker: Worker, bootstrap: str, topics: dict[str, str], partitions: int,
                          load: list[tuple[bytes, bytes]], *, rate: float, duration: float, probe_event: str,
                          marker_every_s: float = 0.1, scrape_every_s: float = 0.05,
                          progress: Progress = print) -> dict:
    """Produce `load` (key, value) to the interactions topic at `rate` records/s for `duration` s, plus a marker
    chat of `probe_event` every `marker_every_s` (its send time noted). A scraper reads the probe's chat count on
    /metrics every `scrape_every_s`; a consumer tails the live topic. Marker i is reflected when the count
    reaches i + 1; its freshness is the time from just before its send to the scrape answer (or the live record)
    that first shows it. Snapshots (and so both views) refresh every LIVEPULSE_SNAPSHOT_INTERVAL_S."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    interactions, live_topic = topics["topic_interactions"], topics["topic_live"]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    probe_key = probe_event.encode()
    live_tp = TopicPartition(live_topic, partition_for(probe_key, partitions))
    consumer.assign([live_tp])
    await consumer.seek_to_end(live_tp)
    sent_at: list[float] = []
    seen_metrics: dict[int, float] = {}
    seen_live: dict[int, float] = {}
    stop = asyncio.Event()
    produced = [0]

    def note(seen: dict[int, float], count: float, at: float) -> None:
        for i in range(len(seen), min(int(count), len(sent_at))):
            seen.setdefault(i, at)

    async def scrape() -> None:
        while not stop.is_set() or len(seen_metrics) < len(sent_at):
            try:
                # Only the series watched: parsing all of them (~40 ms for 40 events) at this rate took the bench
                # process about 40% of one of the 2 cores it shares with the worker and the broker.
                m = await asyncio.to_thread(worker.metrics, [INTERACTIONS_TOTAL])
                note(seen_metrics, chats_of(m, probe_event), time.monotonic())
            except (urllib.error.URLError, OSError):
                pass
            if stop.is_set() and time.monotonic() > stop_at[0] + 30:
                return
            await asyncio.sleep(scrape_every_s)

    async def tail_live() -> None:
        while not stop.is_set() or len(seen_live) < len(sent_at):
            for messages in (await consumer.getmany(live_tp, timeout_ms=100)).values():
                at = time.monotonic()
                for msg in messages:
                    if msg.key == probe_key:
                        note(seen_live, orjson.loads(msg.value)["interactions"].get("chat", 0), at)
            if stop.is_set() and time.monotonic() > stop_at[0] + 30:
                return

    async def marker(i: int) -> None:
        now_ms = int(time.time() * 1000)
        value = orjson.dumps({"id": f"{probe_event}-{i}", "event_id": probe_event, "attendee_id": "probe",
                              "type": "chat", "ts": now_ms})
        sent_at.append(time.monotonic())
        await producer.send(interactions, value, key=probe_key)

    stop_at = [float("inf")]
    sends: list[asyncio.Future] = []
    cpu0, work0 = worker.cpu_seconds(), _batches(await asyncio.to_thread(worker.metrics))
    tasks = [asyncio.create_task(scrape()), asyncio.create_task(tail_live())]
    started = time.monotonic()
    tick = 0.02
    next_marker, last_print = started, started
    try:
        while (now := time.monotonic()) - started < duration and produced[0] < len(load):
            due = min(len(load), int((now - started) * rate))
            # What is due goes out as one record batch per partition: a send per record would cost the load
            # generator about half a core, taken from the worker it measures on a small machine.
            batches: dict[int, Any] = {}
            while produced[0] < due:
                key, value = load[produced[0]]
                partition = partition_for(key, partitions)
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                    batch.close()
                    sends.append(await producer.send_batch(batch, interactions, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
                produced[0] += 1
            for partition, batch in batches.items():
                batch.close()
                sends.append(await producer.send_batch(batch, interactions, partition=partition))
            if now >= next_marker:
                await marker(len(sent_at))
                next_marker += marker_every_s
            if now - last_print >= 5:
                progress(f"  freshness: {produced[0]:,} background records, {len(sent_at)} markers, "
                         f"{len(seen_metrics)} seen on /metrics, {len(seen_live)} on the live topic")
                last_print = now
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - now)))
        await producer.flush()
        await asyncio.gather(*sends)  # raises if the broker refused a batch
        took = time.monotonic() - started
        cpu1, work1 = worker.cpu_seconds(), _batches(await asyncio.to_thread(worker.metrics))
        stop_at[0] = time.monotonic()
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await producer.stop()
        await consumer.stop()

    def stats(seen: dict[int, float]) -> dict:
        lat = sorted(seen[i] - sent_at[i] for i in seen)
        if not lat:
            return {"markers_seen": 0, "p50_s": None, "p99_s": None, "max_s": None}
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
        return {"markers_seen": len(lat), "p50_s": round(q(0.5), 3), "p99_s": round(q(0.99), 3),
                "max_s": round(lat[-1], 3)}

    return {"target_rate": rate, "achieved_rate": round(produced[0] / took, 1), "duration_s": round(took, 2),
            "background_records": produced[0], "markers": len(sent_at),
            "metrics": stats(seen_metrics), "live_topic": stats(seen_live),
            # How hard the worker worked meanwhile: freshness suffers once it is near 100% busy.
            "worker_cpu_share": round((cpu1 - cpu0) / took, 3) if cpu0 is not None and cpu1 is not None else None,
            "worker_batches": work1[0] - work0[0],
            "worker_records_per_batch": round((work1[1] - work0[1]) / max(1, work1[0] - work0[0]), 1),
            "scrape_every_s": scrape_every_s, "snapshot_interval_s": worker.snapshot_interval_s}


def _batches(m: dict) -> tuple[float, float]:
    """(batches, records) the worker has processed, from its livepulse_batch_records histogram."""
    return (sum(m.get("livepulse_batch_records_count", {}).values()),
            sum(m.get("livepulse_batch_records_sum", {}).values()))


# ---------------------------------------------------------------------- recovery
async def _send_marker(bootstrap: str, topic: str, probe_event: str, i: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        value = orjson.dumps({"id": f"{probe_event}-r{i}", "event_id": probe_event, "attendee_id": "probe",
                              "type": "chat", "ts": int(time.time() * 1000)})
        await producer.send_and_wait(topic, value, key=probe_event.encode())
    finally:
        await producer.stop()


def measure_recovery(worker: Worker, bootstrap: str, probe_event: str, *, timeout: float,
                     progress: Progress = print) -> tuple[Worker, dict]:
    """SIGKILL the worker, restart it on the same data dir and app id, and time (from the kill) until /health
    is 200 and until a marker chat produced right after the kill shows on /metrics."""
    before = chats_of(worker.metrics(), probe_event)
    peak = worker.memory().get("VmHWM")
    killed = time.monotonic()
    worker.kill(signal.SIGKILL)
    progress("  recovery: worker killed (SIGKILL); restarting it on the same data dir")
    asyncio.run(_send_marker(bootstrap, worker.topics["topic_interactions"], probe_event, 0))
    restarted = Worker(worker.broker, worker.app_id, worker.topics, worker.data_dir,
                       worker.log_path.with_name("worker-restarted.log"), worker.snapshot_interval_s,
                       worker.extra_env).start()
    healthy = restarted.wait_healthy(timeout)
    healthy_s = None if healthy is None else time.monotonic() - killed
    processing_s = None
    while healthy is not None and time.monotonic() - killed < timeout:
        restarted.check_alive()
        try:
            if chats_of(restarted.metrics(), probe_event) >= before + 1:
                processing_s = time.monotonic() - killed
                break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return restarted, {"healthy_s": None if healthy_s is None else round(healthy_s, 2),
                       "processing_s": None if processing_s is None else round(processing_s, 2),
                       "peak_rss_before_kill_bytes": peak,
                       "session_timeout_s": float(worker.extra_env.get("LIVEPULSE_SESSION_TIMEOUT_S", 10))}
