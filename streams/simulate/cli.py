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
@click.option("--as", "as_", type=click.Choice(["records", "zoom-webhooks"]), default="records", show_default=True,
              help="records: LivePulse records for Kafka. zoom-webhooks: the webinar as Zoom delivers it, signed "
                   "webhook requests POSTed to --url (or written with -o): lifecycle, registrations, joins, leaves "
                   "and chat only (docs/zoom.md).")
@click.option("--url", help="zoom-webhooks: the endpoint, e.g. http://localhost:8080/webhooks/zoom.")
@click.option("--zoom-secret", help="zoom-webhooks: the secret token the requests are signed with (the receiver's "
                                    "configured Zoom secret).")
@click.option("--retry-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="zoom-webhooks: share of deliveries Zoom sends twice (same body, within --max-delay).")
@_pace_options
def simulate_command(seed: int, events: int, registrants: int, duration: str, start: str, attend_rate: float,
                     drop_fraction: float, duplicate_rate: float, reorder_rate: float, max_delay: float,
                     malformed_rate: float, output: str | None, as_: str, url: str | None, zoom_secret: str | None,
                     retry_rate: float, speed: float | None, rate: float | None, broker: str | None,
                     broker_timeout: float) -> None:
    """Simulate live webinars (registrations, joins, heartbeats, chat, polls, questions, CTA clicks, leaves, and
    duplicates, bounded reordering, malformed records) into Kafka, or record them to a JSONL file; or deliver
    them as Zoom webhook requests (--as zoom-webhooks)."""
    start_ms, anchor = parse_start(start)
    if output and (speed or rate):
        raise click.UsageError("--speed and --rate pace sending to Kafka; they do not apply with --output")
    zoom = as_ == "zoom-webhooks"
    if zoom and not zoom_secret:
        raise click.UsageError("--as zoom-webhooks needs --zoom-secret (the receiver's Zoom secret token)")
    if zoom and not (url or output):
        raise click.UsageError("--as zoom-webhooks needs --url (or -o FILE)")
    if not zoom and (url or zoom_secret or retry_rate):
        raise click.UsageError("--url, --zoom-secret and --retry-rate apply with --as zoom-webhooks")
    settings = None if output or zoom else _settings(broker)  # a bad --broker fails before the work
    cfgs = concurrent_events(
        seed, events, registrants=registrants, duration_s=parse_duration(duration), start=start_ms,
        attend_rate=attend_rate, drop_fraction=drop_fraction, duplicate_rate=duplicate_rate,
        reorder_rate=reorder_rate, max_delay_s=max_delay, malformed_rate=malformed_rate,
    )
    records = generate_many(cfgs)
    if zoom:
        _zoom_webhooks(records, seed, zoom_secret or "", retry_rate, reorder_rate, max_delay, output, url, speed,
                       rate)
        return
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


def _zoom_webhooks(records, seed: int, secret: str, retry_rate: float, reorder_rate: float,  # type: ignore[no-untyped-def]
                   max_delay: float, output: str | None, url: str | None, speed: float | None,
                   rate: float | None) -> None:
    """The simulated webinars as signed Zoom webhook requests: POSTed to `url`, or one JSON line each
    ({"ts", "headers", "body"}) to `output`."""
    import orjson

    from streams.simulate.zoom import zoom_webinar

    webinar = zoom_webinar(records, secret=secret, seed=seed, retry_rate=retry_rate, reorder_rate=reorder_rate,
                           max_delay_s=max_delay)
    what = f"{len(webinar.deliveries):,} Zoom webhook deliveries of {len(webinar.event_ids)} webinar(s) " \
           f"({', '.join(list(webinar.event_ids.values())[:3])})"
    if output:
        lines = b"".join(orjson.dumps({"ts": d.ts, "headers": d.headers, "body": d.body.decode()}) + b"\n"
                         for d in webinar.deliveries)
        if output == "-":
            sys.stdout.buffer.write(lines)
            sys.stdout.buffer.flush()
            return
        try:
            Path(output).write_bytes(lines)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
        click.echo(f"wrote {what} to {output}", err=True)
        return
    from streams.simulate.post import post_deliveries

    click.echo(f"posting {what} to {url}" + (f" at {speed:g}x event time" if speed else ""), err=True)
    try:
        statuses = asyncio.run(post_deliveries(webinar.deliveries, url or "", secret, speed=speed, rate=rate))
    except KeyboardInterrupt:
        raise click.Abort() from None
    answers = ", ".join(f"{n:,} x {status or 'no answer'}" for status, n in sorted(statuses.items()))
    click.echo(f"answers: {answers}", err=True)
    if any(not 200 <= status < 300 for status in statuses):
        raise click.ClickException("some deliveries were not accepted (see the answers above)")


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
