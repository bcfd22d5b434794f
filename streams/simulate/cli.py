"""`livepulse simulate` (realistic webinars into Kafka or a JSONL file) and `livepulse replay` (a file into Kafka)."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import click

from streams.settings import Settings
from streams.simulate.scenario import FIXED_START_MS, LOBBY_MS, concurrent_events, generate_many

BROKER_WAIT_S = 30.0


def parse_duration(text: str) -> int:
    """Seconds from 1800, 1800s, 30m, 1.5h or 1h30m."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text))
    if not parts or not any(parts.groups()):
        raise click.BadParameter(f"{text!r}: give seconds or a duration like 45m, 1h, 1h30m", param_hint="--duration")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    seconds = int(h * 3600 + m * 60 + s)
    if seconds < 60:
        raise click.BadParameter(f"{text!r}: a webinar lasts at least a minute", param_hint="--duration")
    return seconds


def parse_start(text: str, now_ms: int | None = None) -> tuple[int, int | None]:
    """(start epoch ms, pacing anchor or None). `now`: the lobby opens now and the webinar starts five minutes
    later, so that with --speed 1 every record is sent when the wall clock reaches its ts."""
    if text == "fixed":
        return FIXED_START_MS, None
    if text == "now":
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        now -= now % 1000
        return now + LOBBY_MS, now
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use fixed, now or an ISO time with offset, e.g. 2026-03-01T15:00:00Z",
                                 param_hint="--start") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{text!r}: give the time zone, e.g. 2026-03-01T15:00:00+01:00",
                                 param_hint="--start")
    return int(parsed.timestamp() * 1000), None


def _settings(broker: str | None):  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    try:
        return Settings(**({"broker": broker} if broker else {}))
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(f"invalid settings: {errors}") from None


def send(records, broker: str | Settings | None, speed: float | None, rate: float | None,  # type: ignore[no-untyped-def]
         anchor_ms: int | None = None, broker_timeout: float = BROKER_WAIT_S) -> None:
    """Wait for the broker (clear error when it does not answer), then produce the records. anchor_ms: the wall
    time (epoch ms) at which paced playback of event time anchor_ms was due (`--start now`)."""
    from aiokafka.errors import KafkaError

    from streams.kafka import KafkaUnavailable, describe, wait_for_broker
    from streams.simulate.produce import produce

    settings = broker if not isinstance(broker, (str, type(None))) else _settings(broker)

    async def run() -> None:
        await wait_for_broker(settings, timeout=broker_timeout)
        await produce(records, settings, speed=speed, rate=rate, anchor_ms=anchor_ms,
                      anchor_is_wall=anchor_ms is not None)

    try:
        asyncio.run(run())
    except KafkaUnavailable as exc:
        raise click.ClickException(f"{exc} (start one with `livepulse broker` or set --broker/LIVEPULSE_BROKER)") \
            from None
    except (KafkaError, OSError, ValueError) as exc:
        raise click.ClickException(f"producing to {describe(settings)} failed: {type(exc).__name__}: {exc}") \
            from None
    except KeyboardInterrupt:
        raise click.Abort() from None


def _pace_options(f):  # type: ignore[no-untyped-def]
    for option in reversed([
        click.option("--speed", type=click.FloatRange(min=0, min_open=True),
                     help="Pace by event time, this many times faster than real time (60: one event minute per "
                          "second). Default: as fast as possible."),
        click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="At most this many records/s."),
        click.option("--broker", help="Bootstrap servers, kafka://host:port[,...]  [default: LIVEPULSE_BROKER or "
                                      "the settings]"),
        click.option("--broker-timeout", default=BROKER_WAIT_S, show_default=True, type=click.FloatRange(0),
                     help="Seconds to wait for the broker to answer before giving up."),
    ]):
        f = option(f)
    return f


@click.command("simulate")
@click.option("--seed", default=7, show_default=True, type=int, help="Same seed and options, same records byte "
                                                                     "for byte.")
@click.option("--events", default=1, show_default=True, type=click.IntRange(1, 10_000),
              help="Concurrent webinars (event ids webinar-<seed>-<n>, sizes +-50% around --registrants).")
@click.option("--registrants", default=200, show_default=True, type=click.IntRange(0, 10_000_000),
              help="Registrants per webinar.")
@click.option("--duration", default="30m", show_default=True, help="Webinar length: seconds or 45m, 1h, 1h30m.")
@click.option("--start", "start", default="fixed", show_default=True,
              help="fixed (2026-01-15T15:00:00Z, reproducible), now (lobby opens now, start in 5 minutes; the "
                   "live clock is real with --speed 1), or an ISO time with offset.")
@click.option("--attend-rate", default=0.45, show_default=True, type=click.FloatRange(0, 1),
              help="Share of registrants who attend live.")
@click.option("--drop-fraction", default=0.25, show_default=True, type=click.FloatRange(0, 1),
              help="Share of the room leaving at once mid-event.")
@click.option("--duplicate-rate", default=0.02, show_default=True, type=click.FloatRange(0, 1),
              help="Share of records re-sent (same id, same bytes).")
@click.option("--reorder-rate", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Share of records delivered out of order.")
@click.option("--max-delay", default=20.0, show_default=True, type=click.FloatRange(0),
              help="Out-of-order bound in seconds behind the newest record (keep it below the allowed lateness).")
@click.option("--malformed-rate", default=0.002, show_default=True, type=click.FloatRange(0, 1),
              help="Share of extra malformed records (dead-lettered by the worker).")
@click.option("--output", "-o", type=click.Path(allow_dash=True, dir_okay=False),
              help="Write JSONL to this file (- for stdout) instead of producing to Kafka.")
@_pace_options
def simulate_command(seed: int, events: int, registrants: int, duration: str, start: str, attend_rate: float,
                     drop_fraction: float, duplicate_rate: float, reorder_rate: float, max_delay: float,
                     malformed_rate: float, output: str | None, speed: float | None, rate: float | None,
                     broker: str | None, broker_timeout: float) -> None:
    """Simulate live webinars (registrations, joins, heartbeats, chat, polls, questions, CTA clicks, leaves, and
    duplicates, bounded reordering, malformed records) into Kafka, or record them to a JSONL file."""
    start_ms, anchor = parse_start(start)
    if output and (speed or rate):
        raise click.UsageError("--speed and --rate pace sending to Kafka; they do not apply with --output")
    settings = None if output else _settings(broker)  # a bad --broker fails before the work
    cfgs = concurrent_events(
        seed, events, registrants=registrants, duration_s=parse_duration(duration), start=start_ms,
        attend_rate=attend_rate, drop_fraction=drop_fraction, duplicate_rate=duplicate_rate,
        reorder_rate=reorder_rate, max_delay_s=max_delay, malformed_rate=malformed_rate,
    )
    records = generate_many(cfgs)
    what = f"{len(records):,} records of {events} webinar(s) ({', '.join(c.event_id for c in cfgs[:3])}" \
           f"{', ...' if events > 3 else ''})"
    if output:
        from streams.simulate.produce import write_jsonl

        if output == "-":
            write_jsonl(records, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            try:
                write_jsonl(records, output)
            except OSError as exc:
                raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
            click.echo(f"wrote {what} to {output}", err=True)
        return
    click.echo(f"producing {what}" + (f" at {speed:g}x event time" if speed else "")
               + (f", at most {rate:g} records/s" if rate else ""), err=True)
    send(records, settings, speed, rate, anchor_ms=anchor, broker_timeout=broker_timeout)


@click.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_pace_options
def replay_command(file: Path, speed: float | None, rate: float | None, broker: str | None,
                   broker_timeout: float) -> None:
    """Produce a recorded JSONL file (from `livepulse simulate -o FILE`) to Kafka, in file order."""
    from streams.simulate.produce import read_jsonl

    try:
        records = read_jsonl(file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot read {file}: {exc.strerror}") from None
    click.echo(f"replaying {len(records):,} records from {file}"
               + (f" at {speed:g}x event time" if speed else ""), err=True)
    send(records, broker, speed, rate, broker_timeout=broker_timeout)
