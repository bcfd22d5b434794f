"""`livepulse demo`: the whole pipeline on one machine in about a minute.

Starts the embedded broker, one worker and a simulated webinar (time-compressed), then prints the live snapshots
as the worker publishes them, and the final summary. Everything it starts is stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import orjson

from streams.broker import EmbeddedBroker
from streams.settings import Settings


def _line(s: dict) -> str:
    rate = s.get("attendance_rate")
    i = s["interactions"]
    return (
        f"{s['event_id']:<18} {s['status']:<7} in room {s['attendees_current']:>5} (peak {s['attendees_peak']:>5})"
        f"  unique {s['unique_attendees']:>5}/{s['registrations']:<5} reg"
        f"  rate {('%.0f%%' % (rate * 100)) if rate is not None else '  - ':>4}"
        f"  dwell avg {s['avg_dwell_seconds'] / 60:5.1f} min"
        f"  chats {i['chat']:>5}  questions {i['question']:>4}  votes {i['poll_vote']:>5}  cta {i['cta_click']:>4}"
        f"  score {s['engagement_score']:5.1f}"
    )


def _marketing(s: dict) -> str:
    cur = s.get("currency") or ""
    money = {k: f"{s[k]:.2f} {cur}" if s.get(k) is not None else "-" for k in ("cost_per_registration",
                                                                              "cost_per_attendee")}
    grades = " ".join(f"{g} {n}" for g, n in s["leads_by_grade"].items())
    return (f"cost/registration {money['cost_per_registration']}  cost/attendee {money['cost_per_attendee']}"
            f"  MQLs {s['mqls']} (grades {grades})"
            f"  key accounts covered {s['key_accounts_covered']}/{s['key_accounts_targeted']}")


def _channels(s: dict) -> list[str]:
    cur = s.get("currency") or ""
    lines = []
    for c in s.get("channels", ()):
        rate = c["attendance_rate"]
        per_mql = f"{c['cost_per_mql']:.2f} {cur}" if c["cost_per_mql"] is not None else "-"
        lines.append(f"{c['channel']:<12} reg {c['registrations']:>5}  attended {c['attendees']:>5}"
                     f"  rate {('%.0f%%' % (rate * 100)) if rate is not None else '  - ':>4}"
                     f"  dwell avg {c['avg_dwell_seconds'] / 60:5.1f} min  score {c['engagement_score']:5.1f}"
                     f"  MQLs {c['mqls']:>4}  cost/MQL {per_mql}")
    return lines


async def _watch(settings: Settings, until_summaries: int, timeout: float) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topic_live, settings.topic_summary,
        bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest", group_id=None,
    )
    await consumer.start()
    summaries: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(summaries) < until_summaries and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    msg = orjson.loads(r.value)
                    if tp.topic == settings.topic_summary:
                        summaries.append(msg)
                        click.echo("SUMMARY  " + _line(msg))
                        click.echo("         " + _marketing(msg))
                        for line in _channels(msg):
                            click.echo("  by channel  " + line)
                    else:
                        click.echo("live     " + _line(msg))
    finally:
        await consumer.stop()
    return summaries


@click.command("demo")
@click.option("--registrants", default=300, show_default=True, help="Registrants of the simulated webinar.")
@click.option("--duration", default=1800, show_default=True, help="Webinar length in seconds (event time).")
@click.option("--speed", default=30.0, show_default=True, help="Time compression of the simulation.")
@click.option("--web-port", default=6066, show_default=True, help="Port of the worker's /metrics.")
@click.option("--seed", default=7, show_default=True, help="Simulation seed.")
def demo_command(registrants: int, duration: int, speed: float, web_port: int, seed: int) -> None:
    """Run broker + worker + a simulated live webinar and show the numbers as they change."""
    workdir = Path("var/demo")
    # The embedded broker keeps nothing between runs, so local state of an earlier run would contradict it
    # (Faust refuses to start on a RocksDB newer than its changelog): every demo starts clean.
    shutil.rmtree(workdir / "worker", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        env = {
            **os.environ,
            "LIVEPULSE_BROKER": broker.url,
            "LIVEPULSE_WEB_PORT": str(web_port),
            "LIVEPULSE_SNAPSHOT_INTERVAL_S": "1",
            "LIVEPULSE_ALLOWED_LATENESS_S": "5",
            "LIVEPULSE_DATA_DIR": str(workdir / "worker"),
        }
        click.echo(f"broker  {broker.url}   metrics  http://127.0.0.1:{web_port}/metrics   logs  {workdir}/")
        with open(workdir / "worker.log", "wb") as log:  # (the child keeps its own copy of the descriptor)
            worker = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env,
                                      stdout=log, stderr=subprocess.STDOUT)
        with open(workdir / "simulate.log", "wb") as log:
            sim = subprocess.Popen(
                [sys.executable, "-m", "streams", "simulate", "--broker", broker.url, "--start", "now",
                 "--registrants", str(registrants), "--duration", str(duration), "--speed", str(speed),
                 "--seed", str(seed), "--max-delay", "4"],  # reordering within the demo's 5 s lateness
                env=env, stdout=subprocess.DEVNULL, stderr=log,
            )
        settings = Settings(broker=broker.url)
        try:
            timeout = duration / max(speed, 1) + 120
            summaries = asyncio.run(_watch(settings, until_summaries=1, timeout=timeout))
            if not summaries:
                raise click.ClickException(f"no summary within {timeout:.0f} s; see {workdir}/worker.log")
            click.echo(f"\nfinal summary, leads and minute windows are on the topics; metrics: "
                       f"http://127.0.0.1:{web_port}/metrics")
        finally:
            for proc in (sim, worker):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in (sim, worker):
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
