"""The `attendees` phase of `livepulse bench`: one worker holding many present attendees, then restarted.

It measures the memory and restart targets, which the throughput workload cannot show (its webinars are
small and have ended by the time the worker has read them, so nobody is present at the end): "1,000,000 present
attendees across 20 concurrent events held by one worker in <= 1 GiB RSS, de-duplication state included; a
restarted worker holding that state is processing again within 30 s".

Each event gets a `started` record and its share of N `join`s, each of a distinct attendee with a distinct id (so
every id is also held for de-duplication), all stamped with the wall clock just before they are produced. The
event clocks then stay within seconds of every join, far inside the 120 s idle timeout, so every attendee is
present once the worker has read them all -- however long producing and processing take. The phase uses topics
and an app id of its own, so it neither sees nor disturbs the throughput workload.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
from pathlib import Path

import orjson

from streams.bench import livepulse_run as lp

TARGET_ATTENDEES = 1_000_000
TARGET_RSS_BYTES = 1 << 30
TARGET_PROCESSING_S = 30.0
RESTORED = re.compile(rb"restored (\d+) events in ([0-9.]+) s")


def records(attendees: int, events: int, t_in: str, t_ev: str) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value): a `started` per event, then the joins round-robin over the events (all concurrent)."""
    now = int(time.time() * 1000)
    ids = [f"att-webinar-{e}" for e in range(events)]
    out = [(t_ev, eid.encode(), orjson.dumps({"event_id": eid, "type": "started", "ts": now})) for eid in ids]
    keys = [eid.encode() for eid in ids]
    for i in range(attendees):
        eid = ids[i % events]
        out.append((t_in, keys[i % events], orjson.dumps({"id": f"{eid}-{i}", "event_id": eid, "attendee_id": f"u{i}",
                                                          "type": "join", "ts": now, "client": "web"})))
    return out


def open_sessions(m: dict) -> float:
    return sum(m.get("livepulse_open_sessions", {}).values())


def _scrape(worker: lp.Worker) -> dict | None:
    """One /metrics scrape, or None when the worker is too busy to answer in time (a slow machine, not a crash)."""
    try:
        return worker.metrics()
    except (urllib.error.URLError, OSError):
        return None


def restore_figures(log_path: Path) -> dict:
    """The restored events and seconds the restarted worker logged ("restored %d events in %.3f s"), summed over
    its rebalances."""
    try:
        found = RESTORED.findall(log_path.read_bytes())
    except OSError:
        found = []
    return {"restored_events": sum(int(n) for n, _ in found) if found else None,
            "restore_s": round(sum(float(s) for _, s in found), 3) if found else None}


def run(broker: str, run_id: str, work: Path, logs: Path, *, attendees: int, events: int, partitions: int,
        progress: lp.Progress, worker_env: dict[str, str] | None = None) -> dict:
    """Produce, hold, measure, kill -9, restart. Raises lp.WorkerCrashed if the worker exits on its own."""
    from streams.bench.workload import produce_bulk
    from streams.kafka import ensure_topics
    from streams.settings import Settings

    bootstrap = broker.split("://", 1)[-1]
    topics = lp.topic_names(f"{run_id}-att")
    t_in, t_ev = topics["topic_interactions"], topics["topic_events"]
    asyncio.run(ensure_topics(Settings(broker=broker), {t_in: partitions, t_ev: partitions},
                              configs={t_in: {"retention.ms": "-1"}, t_ev: {"retention.ms": "-1"}}))
    recs = records(attendees, events, t_in, t_ev)
    total = len(recs)
    last = [time.monotonic()]

    def produced(n: int) -> None:
        if time.monotonic() - last[0] >= 5:
            progress(f"  attendees: produced {n:,}/{total:,}")
            last[0] = time.monotonic()

    took = asyncio.run(produce_bulk(bootstrap, recs, {t_in: partitions, t_ev: partitions}, progress=produced,
                                    eager=frozenset({t_ev})))
    del recs
    out: dict = {"attendees": attendees, "events": events, "records": total, "produce_s": round(took, 2),
                 "targets": {"rss_bytes": TARGET_RSS_BYTES, "for_attendees": TARGET_ATTENDEES,
                             "processing_s": TARGET_PROCESSING_S}}
    progress(f"attendees: produced {total:,} records in {took:.1f} s; starting a fresh worker")

    # Static group membership, as deploy/k8s runs workers: the restart does not wait out the dead member's session.
    env = {**(worker_env or {}), "LIVEPULSE_PARTITIONS": str(partitions),
           "LIVEPULSE_GROUP_INSTANCE_ID": f"{run_id}-att-worker"}
    out["group_instance_id"] = env["LIVEPULSE_GROUP_INSTANCE_ID"]
    per_event = -(-attendees // events)
    if per_event > Settings.model_fields["max_attendees_per_event"].default:  # the cap would reject the rest
        env["LIVEPULSE_MAX_ATTENDEES_PER_EVENT"] = str(per_event)
    if attendees > Settings().max_attendees_per_worker:  # (the memory target is measured beyond the derived cap)
        env["LIVEPULSE_MAX_ATTENDEES_PER_WORKER"] = str(attendees)
    worker = lp.Worker(broker, f"{run_id}-att", topics, work / "attendees-data", logs / "attendees" / "worker.log",
                       snapshot_interval_s=1.0, extra_env=env).start()
    try:
        timeout = max(180.0, total / 1_000)  # generous: a slow machine gets a partial report, not a failure
        started = time.monotonic()
        if worker.wait_healthy(timeout) is None:
            out["note"] = f"the worker was not healthy within {timeout:.0f} s"
            return out
        # the baseline: Python, Faust, RocksDB and the clients loaded, (almost) no attendee yet
        out["rss_healthy_bytes"] = baseline = worker.memory().get("VmRSS", 0)
        done = present = 0.0
        last_print = time.monotonic()
        while time.monotonic() - started < timeout:
            worker.check_alive()
            m = _scrape(worker)
            if m is not None:
                done, present = lp.processed_total(m), open_sessions(m)
                if done >= total and present >= attendees:
                    break
            if time.monotonic() - last_print >= 5:
                progress(f"  attendees: {int(done):,}/{total:,} records processed, {int(present):,} present, "
                         f"rss {worker.memory().get('VmRSS', 0) / 2**20:.0f} MiB")
                last_print = time.monotonic()
            time.sleep(0.2)
        mem = worker.memory()
        rss = mem.get("VmRSS", 0)
        out.update({"processed": int(done), "present_attendees": int(present),
                    "complete": done >= total and present >= attendees,
                    "seconds_to_all_present": round(time.monotonic() - started, 2),
                    "rss_bytes": rss, "peak_rss_bytes": mem.get("VmHWM"),
                    "rss_bytes_per_present_attendee": round(rss / present) if present else None,
                    "rss_growth_bytes_per_present_attendee": round((rss - baseline) / present) if present else None,
                    "rss_target_met": (rss <= TARGET_RSS_BYTES and present >= TARGET_ATTENDEES)
                    if attendees >= TARGET_ATTENDEES else None})
        progress(f"attendees: {int(present):,} present, RSS {rss / 2**20:.0f} MiB (peak "
                 f"{(mem.get('VmHWM') or 0) / 2**20:.0f} MiB, {(rss - baseline) / 2**20:+,.0f} MiB over the healthy worker)")

        # recovery, as the recovery phase measures it: the probe event must be in the state before the kill
        probe = f"probe-{run_id}-att"
        asyncio.run(lp._send_marker(bootstrap, t_in, probe, -1))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not lp.chats_of(_scrape(worker) or {}, probe):
            worker.check_alive()
            time.sleep(0.2)
        progress("attendees: SIGKILL the worker, restart it on the same data dir")
        worker, rec = lp.measure_recovery(worker, bootstrap, probe, timeout=max(120.0, attendees / 5_000),
                                          progress=progress)
        rec.update(restore_figures(worker.log_path))
        # does the restarted worker hold them? (its first snapshot counts them; + 1: the probe's attendee)
        deadline = time.monotonic() + 30
        after = 0.0
        while rec["processing_s"] is not None and time.monotonic() < deadline:
            worker.check_alive()
            after = open_sessions(_scrape(worker) or {})
            if after > attendees:
                break
            time.sleep(0.5)
        rec["present_after_restart"] = int(after) - 1 if after else None
        rec["rss_after_restart_bytes"] = worker.memory().get("VmRSS")
        out["recovery"] = rec
        progress(f"attendees: restarted worker healthy after {rec['healthy_s']} s, processing after "
                 f"{rec['processing_s']} s (restore {rec['restore_s']} s), {rec['present_after_restart']} present")
        worker.check_alive()
        return out
    finally:
        worker.kill(15)
