"""`livepulse simulate` and `livepulse replay`."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import click

from streams.settings import Settings
from streams.simulate.scenario import FIXED_START_MS, concurrent_events, generate_many


def _duration(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", str(text))
    if not m:
        raise click.BadParameter(f"{text!r}: use seconds or a number with s, m or h (e.g. 45m)")
    return int(float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)])


def _start(text: str) -> int:
    if text == "fixed":
        return FIXED_START_MS
    if text == "now":
        return int(time.time() * 1000) + 300_000  # lobby joins (up to 5 min early) begin right away
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use fixed, now or an ISO time with offset") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{text!r}: give the time zone offset, e.g. 2026-01-15T15:00:00+00:00")
    return int(parsed.timestamp() * 1000)


def _send(records, broker: str | None, speed: float | None, rate: float | None) -> None:
    from streams.kafka import KafkaUnavailable, wait_for_broker
    from streams.simulate.produce import produce

    settings = Settings(**({"broker": broker} if broker else {}))

    async def run() -> None:
        await wait_for_broker(settings, timeout=30)
        await produce(records, settings, speed=speed, rate=rate)

    try:
        asyncio.run(run())
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from None


rate_options = [
    click.option("--speed", type=float, help="Play event time this many times faster than real time "
                                             "(default: as fast as possible)."),
    click.option("--rate", type=float, help="Cap on records per second."),
    click.option("--broker", help="Bootstrap servers kafka://host:port [env LIVEPULSE_BROKER]."),
]


def _with(options):
    def wrap(f):
        for option in reversed(options):
            f = option(f)
        return f
    return wrap


@click.command("simulate")
@click.option("--seed", default=7, show_default=True, help="Same seed, same records byte for byte.")
@click.option("--events", default=1, show_default=True, type=click.IntRange(1, 10_000),
              help="Concurrent webinars.")
@click.option("--registrants", default=200, show_default=True, type=click.IntRange(1),
              help="Registrants per webinar (varied +-50% with several events).")
@click.option("--duration", default="30m", show_default=True, help="Length of a webinar: seconds or 45m, 1h.")
@click.option("--start", "start", default="fixed", show_default=True,
              help="Event start: fixed (2026-01-15T15:00Z, reproducible), now, or an ISO time.")
@click.option("--attend-rate", default=0.45, show_default=True, type=click.FloatRange(0, 1))
@click.option("--drop-fraction", default=0.25, show_default=True, type=click.FloatRange(0, 1),
              help="Share of the room leaving at once mid-event.")
@click.option("--duplicate-rate", default=0.02, show_default=True, type=click.FloatRange(0, 1))
@click.option("--reorder-rate", default=0.05, show_default=True, type=click.FloatRange(0, 1))
@click.option("--max-delay", default=20.0, show_default=True, type=click.FloatRange(0),
              help="Out-of-order bound in seconds (keep below the allowed lateness).")
@click.option("--malformed-rate", default=0.002, show_default=True, type=click.FloatRange(0, 1))
@click.option("--output", "-o", type=click.Path(allow_dash=True, dir_okay=False),
              help="Write JSONL here (- for stdout) instead of producing to Kafka.")
@_with(rate_options)
def simulate_command(seed, events, registrants, duration, start, attend_rate, drop_fraction, duplicate_rate,
                     reorder_rate, max_delay, malformed_rate, output, speed, rate, broker) -> None:
    """Simulate live webinars into Kafka (or a JSONL file)."""
    cfgs = concurrent_events(
        seed, events, registrants=registrants, duration_s=_duration(duration), start_ms=_start(start),
        attend_rate=attend_rate, drop_fraction=drop_fraction, duplicate_rate=duplicate_rate,
        reorder_rate=reorder_rate, max_delay_s=max_delay, malformed_rate=malformed_rate,
    )
    records = generate_many(cfgs)
    if output:
        from streams.simulate.produce import write_jsonl

        if output == "-":
            write_jsonl(records, sys.stdout.buffer)
        else:
            with open(output, "wb") as f:
                write_jsonl(records, f)
            click.echo(f"wrote {len(records)} records of {events} webinar(s) to {output}", err=True)
        return
    click.echo(f"producing {len(records)} records of {events} webinar(s)"
               + (f" at {speed:g}x" if speed else ""), err=True)
    _send(records, broker, speed, rate)


@click.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_with(rate_options)
def replay_command(file: Path, speed, rate, broker) -> None:
    """Produce a recorded JSONL file (from `livepulse simulate -o`) to Kafka, in order."""
    from streams.simulate.produce import read_jsonl

    try:
        records = read_jsonl(file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"replaying {len(records)} records from {file}", err=True)
    _send(records, broker, speed, rate)
