"""`livepulse bench`: LivePulse against a ceiling and two peers, on the same seeded workload, in one run.

Phases (each contestant in its own process, consuming the same topic from the beginning with its own group):
  workload   seeded concurrent webinars (streams.bench.workload) produced into the broker in big batches
  ceiling    bare aiokafka consumer + orjson decode + dict count
  peerA      idiomatic per-record Faust agent + table: minute-window counts
  peerB      idiomatic Quix Streams tumbling window: minute-window counts (needs `quixstreams`)
  livepulse  a real `livepulse worker` process, watched on /metrics; then its summaries vs run_records
  freshness  steady paced load + marker chats: record produced -> reflected on /metrics and the live topic
  recovery   SIGKILL the worker, restart it: time until healthy and processing again
  attendees  the memory and restart targets (streams.bench.attendees): a fresh worker on topics of its own
             holds --attendees present attendees of --attendee-events concurrent events (default 1,000,000 over
             20): its RSS per present attendee, then SIGKILL and restart on the same data dir
The workload is produced only when ceiling, a peer or livepulse runs; attendees needs none of them.
Throughput is measured in --rounds rounds of ceiling, peer B and LivePulse, one after the other (peer A only in the
first: its phase alone takes minutes), so a VM that speeds up or slows down during the run shifts every contestant
alike; each contestant's median round is the one reported and compared, and the JSON keeps every round.
Writes bench-<timestamp>.json and .png into --output-dir and prints a table. Exits non-zero only when something
crashed (a contestant, the worker, the broker) or LivePulse's outputs differ from the batch run -- never because
the machine is slow.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from streams import hot_path

PHASES = ("ceiling", "peerA", "peerB", "livepulse", "freshness", "recovery", "attendees")
QUICK = {"records": 20_000, "events": 4, "fresh_rate": 2_000.0, "fresh_seconds": 5.0, "attendees": 20_000,
         "rounds": 2}


def _echo(message: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


def _machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem, "python": platform.python_version(),
            "platform": platform.platform()}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("livepulse", "faust-streaming", "aiokafka", "quixstreams", "confluent-kafka", "orjson"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def run_contestant(module: str, args: list[str], timeout: float, log_path: Path) -> dict:
    """Run python -m module args; its BENCH_RESULT line, or {"error": ...} / {"timed_out": True}."""
    from streams.bench.common import parse_result

    cmd = [sys.executable, "-P", "-m", module, *args]  # -P: the installed streams, not one in the cwd
    out_path = log_path.with_suffix(".out")  # a file, not a pipe: Faust's worker loses what it writes to a pipe
    with open(log_path, "wb") as err, open(out_path, "wb") as out_file:
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err, stdin=subprocess.DEVNULL)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {"timed_out": True, "error": None, "note": f"no result within {timeout:.0f} s (slow machine?)"}
    out = out_path.read_bytes()
    result = parse_result(out.decode(errors="replace"))
    if result is None:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        return {"error": f"{module} exited with code {proc.returncode} without a result; log {log_path}:\n{tail}"}
    return result


def _fmt_rate(value: float | None) -> str:
    return f"{value:,.0f}" if value else "-"


def _hot_path_note(result: dict) -> str:
    build = result.get("hot_path", "interpreted")
    return build if build == "compiled" else f"{build} (the compiled build is faster: make fast, docs/performance.md)"


def _fmt_ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def render_table(result: dict) -> str:
    c = result["contestants"]
    lp = c.get("livepulse", {}).get("records_per_s")
    rows = [("contestant", "records", "seconds", "records/s", "LivePulse / it")]
    labels = {"ceiling": "ceiling (aiokafka+orjson)", "peerA": "peer A (Faust per-event)",
              "peerB": "peer B (Quix Streams)", "livepulse": "LivePulse (full pipeline)"}
    for name in ("ceiling", "peerA", "peerB", "livepulse"):
        r = c.get(name)
        if r is None:
            continue
        if r.get("skipped"):
            rows.append((labels[name], "skipped", "", "", r["skipped"]))
            continue
        if r.get("error") or r.get("timed_out"):
            rows.append((labels[name], "failed" if r.get("error") else "timed out", "", "", ""))
            continue
        rate = r.get("records_per_s")
        rows.append((labels[name], f"{r.get('measured_records', r.get('records', 0)):,}", f"{r.get('seconds', 0):.2f}",
                     _fmt_rate(rate), "1.00x" if name == "livepulse" else _fmt_ratio(lp, rate)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    extra = [f"LivePulse hot path: {_hot_path_note(result)}"]
    per_round = [f"{name} " + " / ".join(_fmt_rate(x) for x in c[name]["rounds_records_per_s"])
                 for name in ("ceiling", "peerA", "peerB", "livepulse")
                 if len((c.get(name) or {}).get("rounds_records_per_s") or ()) > 1]
    if per_round:
        extra.append("records/s in each round (the table shows the median): " + "; ".join(per_round))
    if result.get("worker_settings"):
        extra.append("worker settings: " + ", ".join(f"{k}={v}" for k, v in result["worker_settings"].items()))
    fr = result.get("freshness")
    if fr and not fr.get("skipped") and not fr.get("error"):
        m, live = fr["metrics"], fr["live_topic"]
        extra.append(f"freshness at {fr['achieved_rate']:,.0f} records/s (target {fr['target_rate']:,.0f}), snapshot "
                     f"interval {fr['snapshot_interval_s']:g} s: /metrics p50 {m['p50_s']} s p99 {m['p99_s']} s; "
                     f"live topic p50 {live['p50_s']} s p99 {live['p99_s']} s ({m['markers_seen']}/{fr['markers']} "
                     f"markers); {_busy(fr)}")
    lpr = c.get("livepulse", {})
    if lpr.get("peak_rss_bytes"):
        # (memory per present attendee: the attendees phase; this workload's webinars are over when it is read)
        extra.append(f"worker peak RSS {lpr['peak_rss_bytes'] / 2**20:.0f} MiB; state per attendee key "
                     f"{result.get('state', {}).get('bytes_per_attendee_key', '-')} B in the changelog")
    rec = result.get("recovery")
    if rec and not rec.get("skipped") and not rec.get("error"):
        extra.append(f"recovery after SIGKILL: healthy in {rec['healthy_s']} s, processing in {rec['processing_s']} s "
                     f"(session timeout {rec['session_timeout_s']:g} s)")
    extra.extend(_attendee_lines(result.get("attendees")))
    eq = result.get("outputs_equal")
    if eq is not None:
        extra.append(f"outputs equal to run_records: {'yes' if eq else 'NO'} "
                     f"({result.get('outputs', {}).get('events_compared', 0)} event summaries)")
    extra.extend(_target_lines(result.get("targets") or target_verdicts(result)))
    return "\n".join(lines + [""] + extra)


# LivePulse's performance targets for one worker on a 2-core machine (the JSON's "targets"), by name; see
# docs/performance.md "Targets".
TARGETS = (
    ("ceiling", "LivePulse / ceiling >= 0.5"),
    ("peerA", "LivePulse / peer A >= 25"),
    ("peerB", "LivePulse / peer B > 1"),
    ("freshness", "/metrics p99 <= 1 s at 20,000 records/s, 1-s snapshots"),
    ("memory", "RSS <= 1 GiB with 1,000,000 present attendees"),
    ("restart", "processing again <= 30 s after kill -9 with them"),
)


def target_verdicts(result: dict) -> dict[str, dict]:
    """Each target: {"target", "value", "met"}; "met" is None where this run did not measure it at the
    target's size (a skipped phase, --quick, another --fresh-rate)."""
    from streams.bench.attendees import TARGET_ATTENDEES, TARGET_PROCESSING_S

    c = result.get("contestants", {})
    rate = {name: (c.get(name) or {}).get("records_per_s") for name in ("ceiling", "peerA", "peerB", "livepulse")}
    ratio = {name: rate["livepulse"] / rate[name] if rate["livepulse"] and rate[name] else None
             for name in ("ceiling", "peerA", "peerB")}
    values: dict[str, tuple[float | None, bool | None]] = {
        "ceiling": (ratio["ceiling"], None if ratio["ceiling"] is None else ratio["ceiling"] >= 0.5),
        "peerA": (ratio["peerA"], None if ratio["peerA"] is None else ratio["peerA"] >= 25.0),
        "peerB": (ratio["peerB"], None if ratio["peerB"] is None else ratio["peerB"] > 1.0),
    }
    fr = result.get("freshness") or {}
    p99 = (fr.get("metrics") or {}).get("p99_s")
    at_size = fr.get("target_rate", 0) >= 20_000 and fr.get("snapshot_interval_s") == 1.0
    values["freshness"] = (p99, p99 <= 1.0 if p99 is not None and at_size else None)
    att = result.get("attendees") or {}
    at_size = att.get("attendees", 0) >= TARGET_ATTENDEES
    rss = att.get("rss_bytes")
    values["memory"] = (rss, att.get("rss_target_met") if at_size and rss else None)
    restart = (att.get("recovery") or {}).get("processing_s")
    values["restart"] = (restart, restart <= TARGET_PROCESSING_S if at_size and restart is not None else None)
    return {name: {"target": target, "value": values[name][0], "met": values[name][1]} for name, target in TARGETS}


def _target_lines(verdicts: dict[str, dict]) -> list[str]:
    judged = {n: v for n, v in verdicts.items() if v["met"] is not None}
    if not judged:
        return ["targets: none measured at the targets' sizes in this run"]
    met = [n for n, v in judged.items() if v["met"]]
    missed = [n for n, v in judged.items() if not v["met"]]
    unmeasured = [n for n in verdicts if n not in judged]
    return [f"targets: {len(met)} of {len(judged)} met" + (f" (missed: {', '.join(missed)})" if missed else "")
            + (f"; not measured at the targets' sizes: {', '.join(unmeasured)}" if unmeasured else "")]


def _attendee_lines(att: dict | None) -> list[str]:
    """The attendees phase next to its targets (1 GiB for 1,000,000 present; processing within 30 s)."""
    if not att or att.get("skipped") or "present_attendees" not in att:
        return []
    t = att["targets"]
    held = (f"attendees: {att['present_attendees']:,} present of {att['attendees']:,} over {att['events']} events: "
            f"worker RSS {att['rss_bytes'] / 2**20:,.0f} MiB (peak {(att['peak_rss_bytes'] or 0) / 2**20:,.0f} MiB; "
            f"target <= {t['rss_bytes'] / 2**30:g} GiB for {t['for_attendees']:,}), "
            f"{_fmt_rate(att['rss_bytes_per_present_attendee'])} B per present attendee "
            f"({_fmt_rate(att['rss_growth_bytes_per_present_attendee'])} B of growth over the healthy worker)")
    lines = [held]
    rec = att.get("recovery")
    if rec:
        lines.append(f"attendees restart after SIGKILL (static group membership): healthy in {rec['healthy_s']} s, "
                     f"processing in "
                     f"{rec['processing_s']} s (target <= {t['processing_s']:g} s; restore {rec['restore_s']} s, "
                     f"{_fmt_rate(rec['present_after_restart'])} present after it)")
    return lines


def render_png(result: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    c = result["contestants"]
    names = [n for n in ("ceiling", "peerA", "peerB", "livepulse") if c.get(n, {}).get("records_per_s")]
    labels = {"ceiling": "ceiling\naiokafka+orjson", "peerA": "peer A\nFaust per-event",
              "peerB": "peer B\nQuix Streams", "livepulse": "LivePulse\nfull pipeline"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    ax = axes[0]
    rates = [c[n]["records_per_s"] for n in names]
    bars = ax.bar([labels[n] for n in names], rates,
                  color=["#999999" if n == "ceiling" else "#1f77b4" if n == "livepulse" else "#ff7f0e" for n in names])
    ax.set_yscale("log")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel("records/s (log)")
    ax.set_title(f"Throughput, {result['workload']['records']:,} records" if names else "Throughput: not measured")
    lp = c.get("livepulse", {}).get("records_per_s")
    for bar, n, rate in zip(bars, names, rates):
        note = f"{rate:,.0f}/s" + (f"\nLP {lp / rate:.2f}x" if lp and n != "livepulse" else "")
        ax.annotate(note, (bar.get_x() + bar.get_width() / 2, rate), ha="center", va="bottom", fontsize=8)
    ax = axes[1]
    fr = result.get("freshness") or {}
    if fr.get("metrics"):
        kinds = [("/metrics", fr["metrics"]), ("live topic", fr["live_topic"])]
        xs = range(len(kinds))
        ax.bar([x - 0.2 for x in xs], [k[1]["p50_s"] or 0 for k in kinds], width=0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [k[1]["p99_s"] or 0 for k in kinds], width=0.4, label="p99")
        ax.set_xticks(list(xs), [k[0] for k in kinds])
        ax.set_ylabel("seconds")
        ax.legend()
        ax.set_title(f"Freshness at {fr['achieved_rate']:,.0f} rec/s (snapshots every {fr['snapshot_interval_s']:g} s)")
    else:
        ax.set_title("Freshness: not measured")
    ax = axes[2]
    samples = c.get("livepulse", {}).get("samples") or []
    if samples:
        ax.plot([s["t"] for s in samples], [s["processed"] for s in samples], label="records processed")
        ax.set_xlabel("seconds since the worker started")
        ax.set_ylabel("records")
        ax2 = ax.twinx()
        ax2.plot([s["t"] for s in samples], [s["rss"] / 2**20 for s in samples], color="#d62728", label="RSS MiB")
        ax2.set_ylabel("RSS MiB", color="#d62728")
        ax.set_title("LivePulse worker: progress and memory")
    fig.suptitle(f"livepulse bench {result['date']} on {result['machine']['cores']} cores "
                 f"({result['machine']['cpu']})", fontsize=10)
    notes = _attendee_lines(result.get("attendees"))
    if notes:
        fig.text(0.01, 0.01, "\n".join(notes), fontsize=7.5, va="bottom")
    fig.tight_layout(rect=(0, 0.06 * len(notes) / 2, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _busy(fr: dict) -> str:
    share = fr.get("worker_cpu_share")
    busy = f"worker {share:.0%} busy" if share is not None else "worker CPU unknown"
    return f"{busy}, {fr.get('worker_records_per_batch', '?')} records per batch"


def _state_figures(collected) -> dict:
    """Bytes of state as the compacted changelog holds it after the workload (run_records' final state)."""
    keys = [k for k in collected.state if not k.startswith(b"#roi/")]
    attendee = [k for k in keys if b"/" in k and not k.endswith(b"/")]  # (not ids, window or event records)
    total = sum(len(k) + len(collected.state[k]) for k in keys)
    att_bytes = sum(len(k) + len(collected.state[k]) for k in attendee)
    return {"state_keys": len(keys), "attendee_keys": len(attendee), "state_bytes": total,
            "bytes_per_attendee_key": round(att_bytes / len(attendee)) if attendee else None}


@click.command("bench")
@click.option("--records", type=click.IntRange(1_000), default=250_000, show_default=True,
              help="About this many workload records (the exact count is reported).")
@click.option("--events", type=click.IntRange(1), default=40, show_default=True, help="Concurrent webinars.")
@click.option("--seed", type=int, default=7, show_default=True, help="Workload seed (same seed, same bytes).")
@click.option("--partitions", type=click.IntRange(1), default=4, show_default=True,
              help="Partitions of the benchmark topics.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-results"),
              show_default=True, help="Where the JSON result, the PNG chart and the logs go.")
@click.option("--broker", default=None, help="Use this broker (kafka://host:port) instead of an embedded one.")
@click.option("--skip", multiple=True, type=click.Choice(PHASES), help="Skip a phase (repeatable).")
@click.option("--fresh-rate", type=float, default=20_000.0, show_default=True,
              help="Paced rate (records/s) of the freshness phase.")
@click.option("--fresh-seconds", type=float, default=20.0, show_default=True, help="Length of the freshness phase.")
@click.option("--attendees", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="Present attendees held by one worker in the attendees phase.")
@click.option("--attendee-events", type=click.IntRange(1), default=20, show_default=True,
              help="Concurrent events the attendees phase spreads them over.")
@click.option("--worker-setting", "worker_settings", multiple=True, metavar="NAME=VALUE",
              help="A LivePulse setting for every worker of the run, e.g. checkpoint_interval_s=1 (repeatable; "
              "the names of docs/configuration.md, LIVEPULSE_ optional). Otherwise workers run on the defaults: "
              "the bench ignores LIVEPULSE_ variables of its own environment.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Rounds of the throughput phases (ceiling, peer B, LivePulse; peer A runs once): the median "
              "round of each is reported.")
@click.option("--profile", is_flag=True, help="py-spy the worker during its throughput phase (needs py-spy).")
@click.option("--quick", is_flag=True, help=f"Small preset for tests: {QUICK}.")
def bench_command(records: int, events: int, seed: int, partitions: int, output_dir: Path, broker: str | None,
                  skip: tuple[str, ...], fresh_rate: float, fresh_seconds: float, attendees: int, attendee_events: int,
                  worker_settings: tuple[str, ...], rounds: int, profile: bool, quick: bool) -> None:
    """Benchmark LivePulse against a bare consumer and two peer implementations (Faust, Quix Streams)."""
    from streams.bench.livepulse_run import worker_settings_env

    try:
        worker_env = worker_settings_env(worker_settings)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--worker-setting") from None
    if quick:
        records, events = QUICK["records"], QUICK["events"]
        fresh_rate, fresh_seconds, attendees = QUICK["fresh_rate"], QUICK["fresh_seconds"], QUICK["attendees"]
        rounds = QUICK["rounds"]
    output_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    run = f"bench-{stamp:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"
    work = Path(tempfile.mkdtemp(prefix=f"{run}-"))
    logs = output_dir / f"{run}-logs"
    logs.mkdir(exist_ok=True)
    result: dict = {"run": run, "date": stamp.isoformat(timespec="seconds"), "machine": _machine(),
                    "versions": _versions(), "hot_path": hot_path(), "worker_settings": worker_env,
                    "contestants": {}, "crashed": []}
    _echo(f"LivePulse hot path: {_hot_path_note(result)}")
    embedded = None
    try:
        if broker is None:
            from streams.broker import EmbeddedBroker

            _echo("starting the embedded broker (tansu)")
            embedded = EmbeddedBroker(log_path=logs / "tansu.log").start()
            broker = embedded.url
        if {"ceiling", "peerA", "peerB", "livepulse"} <= set(skip):
            result["workload"] = {"skipped": "no phase uses it"}
            result["contestants"] = {name: {"skipped": "--skip"} for name in ("ceiling", "peerA", "peerB", "livepulse")}
        else:
            _bench(result, broker, run, work, logs, records=records, events=events, seed=seed,
                   partitions=partitions, skip=set(skip), fresh_rate=fresh_rate, fresh_seconds=fresh_seconds,
                   profile=profile, worker_env=worker_env, rounds=rounds)
        _attendees(result, broker, run, work, logs, attendees=attendees, events=attendee_events,
                   partitions=partitions, skip=set(skip), worker_env=worker_env)
    except Exception as exc:  # noqa: BLE001 - a crash is reported in the result, then the exit code
        result["crashed"].append(f"bench: {type(exc).__name__}: {exc}")
        _echo(f"CRASH: {type(exc).__name__}: {exc}")
    finally:
        if embedded is not None:
            if not embedded.running:
                result["crashed"].append(f"broker exited; log {embedded.log_path}")
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["targets"] = target_verdicts(result)
    json_path = output_dir / f"{run}.json"
    png_path = output_dir / f"{run}.png"
    result["png"] = str(png_path) if render_png(result, png_path) else None
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    click.echo(render_table(result))
    click.echo(f"\nresult: {json_path}" + (f"\nchart:  {png_path}" if result["png"] else
                                          "\nchart:  skipped (pip install 'livepulse[report]' for matplotlib)"))
    failed = result["crashed"] + ([] if result.get("outputs_equal") is not False else ["outputs differ"])
    if failed:
        click.echo("FAILED: " + "; ".join(failed), err=True)
        sys.exit(1)


def _bench(result: dict, broker: str, run: str, work: Path, logs: Path, *, records: int, events: int, seed: int,
           partitions: int, skip: set[str], fresh_rate: float, fresh_seconds: float, profile: bool,
           worker_env: dict[str, str], rounds: int = 1) -> None:
    from streams.bench import livepulse_run as lp
    from streams.bench import workload
    from streams.kafka import ensure_topics
    from streams.settings import Settings

    bootstrap = broker.split("://", 1)[-1]
    topics = lp.topic_names(run)
    t_in, t_ev = topics["topic_interactions"], topics["topic_events"]
    names = {"interactions": t_in, "events": t_ev}

    # ---------------------------------------------------------------- workload
    _echo(f"workload: generating ~{records:,} records over {events} concurrent webinars (seed {seed})")
    started = time.monotonic()
    w = workload.build(records, events, seed)
    gen_s = time.monotonic() - started
    n_total, n_inter = len(w.records), w.interactions
    result["workload"] = {"records": n_total, "interactions": n_inter, "events": len(w.event_ids), "seed": seed,
                          "registrants_per_event": w.registrants, "mean_value_bytes": round(w.mean_bytes, 1),
                          "type_mix": w.type_mix(), "partitions": partitions, "generate_s": round(gen_s, 2)}
    _echo(f"workload: {n_total:,} records ({n_inter:,} interactions, mean {w.mean_bytes:.0f} B) in {gen_s:.1f} s; "
          f"producing to {t_in}")
    settings = Settings(broker=broker)
    # retention.ms given explicitly: tansu describes only configs set at creation, and Quix Streams reads it.
    asyncio.run(ensure_topics(settings, {t_in: partitions, t_ev: partitions},
                              configs={t_in: {"retention.ms": "-1"}, t_ev: {"retention.ms": "-1"}}))
    last = [0.0]

    def produced(n: int) -> None:
        if time.monotonic() - last[0] >= 5:
            _echo(f"  produced {n:,}/{n_total:,}")
            last[0] = time.monotonic()

    took = asyncio.run(workload.produce_bulk(bootstrap, [(names[r.topic], r.key, r.value) for r in w.records],
                                             {t_in: partitions, t_ev: partitions}, progress=produced,
                                             eager=frozenset({t_ev})))
    result["workload"]["produce_s"] = round(took, 2)
    result["workload"]["produce_records_per_s"] = round(n_total / took, 1)
    _echo(f"workload: produced in {took:.1f} s ({n_total / took:,.0f}/s)")

    # ---------------------------------------------------------------- rounds of ceiling, peers and LivePulse
    timeout = max(180.0, n_inter / 1_500)  # generous: a slow machine gets a partial report, not a failure
    contestants = [("ceiling", "streams.bench.ceiling", None), ("peerA", "streams.bench.peer_faust", None),
                   ("peerB", "streams.bench.peer_quix",
                    None if importlib.util.find_spec("quixstreams") else
                    "quixstreams is not installed (pip install 'livepulse[bench]')")]
    runs: dict[str, list[dict]] = {"ceiling": [], "peerA": [], "peerB": [], "livepulse": []}
    worker = None
    for rnd in range(rounds):
        last_round = rnd == rounds - 1
        if rounds > 1:
            _echo(f"round {rnd + 1} of {rounds}")
        for name, module, unavailable in contestants:
            if name in skip or unavailable:
                if rnd == 0:
                    result["contestants"][name] = {"skipped": "--skip" if name in skip else unavailable}
                    _echo(f"{name}: skipped ({result['contestants'][name]['skipped']})")
                continue
            if (name == "peerA" and rnd > 0) or (runs[name] and not runs[name][-1].get("records_per_s")):
                continue  # peer A: once (minutes per round); a contestant that failed or timed out: not again
            suffix = f"-r{rnd + 1}" if rnd else ""
            _echo(f"{name}: consuming {n_inter:,} interactions from the beginning ({module})")
            args = ["--bootstrap", bootstrap, "--topic", t_in, "--partitions", str(partitions), "--expected",
                    str(n_inter), "--group", f"{run}-{name}{suffix}", "--workdir", str(work / f"{name}{suffix}")]
            r = run_contestant(module, args, timeout, logs / f"{name}{suffix}.log")
            runs[name].append(r)
            if r.get("error"):
                result["crashed"].append(f"{name}: {r['error']}")
                _echo(f"{name}: CRASHED: {r['error']}")
            elif r.get("timed_out"):
                _echo(f"{name}: {r['note']}")
            else:
                _echo(f"{name}: {r['records']:,} records in {r['seconds']:.2f} s = {r['records_per_s']:,.0f}/s "
                      f"(startup {r['startup_s']:.1f} s)")
        if "livepulse" in skip:
            continue
        # Every round but the last: a worker of its own (own app id, state and output topics), measured and
        # stopped. The last round's worker goes on to the freshness and recovery phases.
        suffix = "" if last_round else f"-r{rnd + 1}"
        own = topics if last_round else {**lp.topic_names(f"{run}{suffix}"), "topic_interactions": t_in,
                                          "topic_events": t_ev}
        worker = lp.Worker(broker, f"{run}-livepulse{suffix}", own, work / f"livepulse-data{suffix}",
                           logs / f"worker{suffix}.log", snapshot_interval_s=1.0,
                           extra_env={**worker_env, "LIVEPULSE_PARTITIONS": str(partitions)})
        _echo(f"livepulse: starting `livepulse worker` (app id {worker.app_id}) on the same topics")
        worker.start()
        try:
            r = _livepulse_throughput(worker, n_total, logs, profile=profile and last_round)
        except lp.WorkerCrashed:
            worker.kill(15)
            raise
        runs["livepulse"].append(r)
        if not last_round:
            worker.kill(15)
    for name, done in runs.items():
        if done:
            result["contestants"][name] = median_round(done)
    if "livepulse" in skip:
        result["contestants"]["livepulse"] = {"skipped": "--skip"}
        return
    assert worker is not None
    r = runs["livepulse"][-1]

    try:
        _compare_outputs(result, w, topics, partitions, bootstrap, complete=r["complete"])

        probe = f"probe-{run}"
        if "freshness" not in skip:
            _echo(f"freshness: {fresh_seconds:g} s at {fresh_rate:,.0f} records/s with marker chats every 0.1 s")
            load_n = int(fresh_rate * fresh_seconds) + 1
            bg = [(rec.key, rec.value) for rec in workload.background(load_n, max(2, events // 2), seed + 1)
                  if rec.topic == "interactions"]
            result["freshness"] = asyncio.run(lp.freshness_probe(
                worker, bootstrap, topics, partitions, bg, rate=fresh_rate, duration=fresh_seconds,
                probe_event=probe, scrape_every_s=0.1, progress=_echo))
            f = result["freshness"]
            _echo(f"freshness: /metrics p50 {f['metrics']['p50_s']} s p99 {f['metrics']['p99_s']} s; live topic "
                  f"p50 {f['live_topic']['p50_s']} s p99 {f['live_topic']['p99_s']} s; {_busy(f)}")
        else:
            result["freshness"] = {"skipped": "--skip"}
        if "recovery" not in skip:
            if "freshness" in skip:  # the probe event must exist before the kill
                asyncio.run(lp._send_marker(bootstrap, t_in, probe, -1))
                time.sleep(3)
            _echo("recovery: SIGKILL the worker, restart it on the same data dir")
            worker, result["recovery"] = lp.measure_recovery(worker, bootstrap, probe,
                                                             timeout=120.0, progress=_echo)
            _echo(f"recovery: healthy after {result['recovery']['healthy_s']} s, processing after "
                  f"{result['recovery']['processing_s']} s")
        else:
            result["recovery"] = {"skipped": "--skip"}
        worker.check_alive()
    except lp.WorkerCrashed as exc:
        result["crashed"].append(f"livepulse worker: {exc}")
        _echo(f"livepulse: CRASHED: {exc}")
    finally:
        worker.kill(15)


def _livepulse_throughput(worker, n_total: int, logs: Path, *, profile: bool) -> dict:
    from streams.bench import livepulse_run as lp

    spy = None
    try:
        py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if profile and not py_spy:
            _echo("livepulse: --profile needs py-spy (pip install py-spy); not profiling")
        elif profile:
            spy = subprocess.Popen([py_spy, "record", "--pid", str(worker.pid), "--format", "raw", "--rate", "200", "--idle",
                                    "-o", str(logs / "worker-profile.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = lp.measure_throughput(worker, n_total, timeout=max(180.0, n_total / 1_000), progress=_echo)
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
    _echo(f"livepulse: {r['records']:,} records; {r['measured_records']:,} in {r['seconds']:.2f} s = "
          f"{_fmt_rate(r['records_per_s'])}/s ({_fmt_rate(r['records_per_cpu_s'])} per CPU second of the worker); "
          f"peak RSS {(r['peak_rss_bytes'] or 0) / 2**20:.0f} MiB")
    return r


def median_round(runs: list[dict]) -> dict:
    """The round with the median rate (the lower of the middle two for an even count: never flattering), with
    every round's rate beside it; a contestant with no measured round keeps its last round (its error)."""
    measured = sorted((r for r in runs if r.get("records_per_s")), key=lambda r: r["records_per_s"])
    if not measured:
        return runs[-1]
    chosen = dict(measured[(len(measured) - 1) // 2])
    chosen["rounds_records_per_s"] = [r.get("records_per_s") for r in runs]
    return chosen


def _attendees(result: dict, broker: str, run: str, work: Path, logs: Path, *, attendees: int, events: int,
               partitions: int, skip: set[str], worker_env: dict[str, str]) -> None:
    """After the other phases (their worker is stopped by then, so the RSS is this worker's alone)."""
    from streams.bench import attendees as att
    from streams.bench import livepulse_run as lp

    if "attendees" in skip:
        result["attendees"] = {"skipped": "--skip"}
        return
    _echo(f"attendees: {attendees:,} joins over {events} concurrent events, held by one fresh worker")
    try:
        result["attendees"] = att.run(broker, run, work, logs, attendees=attendees, events=events,
                                      partitions=partitions, worker_env=worker_env, progress=_echo)
    except lp.WorkerCrashed as exc:
        result["attendees"] = {"error": str(exc)}
        result["crashed"].append(f"attendees worker: {exc}")
        _echo(f"attendees: CRASHED: {exc}")


def _compare_outputs(result: dict, w, topics: dict, partitions: int, bootstrap: str, *, complete: bool) -> None:
    from streams.bench import livepulse_run as lp
    from streams.settings import Settings
    from streams.testing import run_records

    _echo(f"outputs: run_records over the same {len(w.records):,} records (no broker), then the worker's summaries")
    settings = Settings(**topics)
    started = time.monotonic()
    collected = run_records(w.raw({"interactions": topics["topic_interactions"],
                                   "events": topics["topic_events"]}, partitions),
                            settings, partitions=partitions, batch_size=2000, wall_start=time.time())
    batch_s = time.monotonic() - started
    result["state"] = _state_figures(collected)
    r = result["contestants"]["livepulse"]
    peak_sum = sum(s.get("attendees_peak") or 0 for s in collected.summaries.values())
    result["state"]["sum_of_event_peaks"] = peak_sum
    if r["peak_present_attendees"] >= 0.5 * peak_sum and r["rss_growth_at_peak_present_bytes"] > 0:
        r["rss_bytes_per_present_attendee"] = round(r["rss_growth_at_peak_present_bytes"] / r["peak_present_attendees"])
        r["rss_per_attendee_basis"] = "RSS growth at the poll with most present attendees (/metrics) / those"
    elif peak_sum and r["rss_end_bytes"] and r["rss_baseline_bytes"]:
        # the workload went through faster than the snapshots: use the events' peaks (they overlap in time)
        r["rss_bytes_per_present_attendee"] = round((r["rss_end_bytes"] - r["rss_baseline_bytes"]) / peak_sum)
        r["rss_per_attendee_basis"] = "RSS growth over the run / sum of the events' attendees_peak"
    expected = collected.summaries
    got = asyncio.run(lp.read_summaries(bootstrap, topics["topic_summary"], set(w.event_ids),
                                        timeout=120.0 if complete else 10.0))
    diffs = []
    for event_id in sorted(w.event_ids):
        if event_id not in got:
            diffs.append(f"{event_id}: no summary from the worker")
        elif event_id not in expected:
            diffs.append(f"{event_id}: no summary from run_records")
        else:
            diffs.extend(f"{event_id}: {d}" for d in lp.differences(got[event_id], expected[event_id]))
    result["outputs_equal"] = not diffs
    result["outputs"] = {"events_compared": len(w.event_ids), "worker_summaries": len(got),
                         "batch_summaries": len(expected), "differences": diffs[:20],
                         "run_records_s": round(batch_s, 2),
                         "run_records_per_s": round(len(w.records) / batch_s, 1)}
    _echo(f"outputs equal: {'yes' if not diffs else 'NO'} ({len(got)}/{len(w.event_ids)} summaries; "
          f"run_records took {batch_s:.1f} s = {len(w.records) / batch_s:,.0f} records/s in-process)")
    for d in diffs[:5]:
        _echo(f"  {d}")
