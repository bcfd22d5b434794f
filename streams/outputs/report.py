"""`livepulse report EVENT_ID`: one PNG of a webinar, read back from the output topics, to look at a run
without Prometheus and Grafana.

`fetch` reads what a consumer of the output topics sees (README "Topics"): delivery is at-least-once, so records
are upserts by key -- the last summary of an event wins, and minute windows are de-duplicated by window start.
`figure` / `render` are pure (dicts in, figure or PNG out), so they are tested on the real pipeline's outputs
without a broker and can be used from a notebook. matplotlib is the optional extra `report`, imported lazily so
that the worker never pays for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

    from streams.settings import Settings

MINUTE_MS = 60_000
# (minute-window field, summary `interactions` field, legend label, colour): what the minute schema counts.
INTERACTION_SERIES = (
    ("chats", "chat", "Chat", "#4C72B0"),
    ("questions", "question", "Questions", "#DD8452"),
    ("poll_votes", "poll_vote", "Poll votes", "#55A868"),
    ("reactions", "reaction", "Reactions", "#8172B3"),
    ("cta_clicks", "cta_click", "CTA clicks", "#C44E52"),
)
INSTALL_HINT = "pip install 'livepulse[report]'"
BROKER_WAIT_S = 10.0  # longest wait for an unreachable broker (the rest of --timeout is for reading)


class ReportUnavailable(RuntimeError):
    """matplotlib (the `report` extra) is not installed."""


class UnknownEvent(LookupError):
    """Nothing on the summary, minute or live topics for the event; `known` lists event ids that do exist."""

    def __init__(self, event_id: str, known: list[str]) -> None:
        super().__init__(event_id)
        self.event_id = event_id
        self.known = known


# ----------------------------------------------------------------------------------------------- rendering
def _matplotlib() -> Any:
    """Import matplotlib with the Agg backend (no display needed), or say how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ReportUnavailable(f"the report needs matplotlib: {INSTALL_HINT}") from None
    matplotlib.use("Agg", force=False)
    return matplotlib


def origin_ms(summary: dict, minutes: list[dict]) -> int | None:
    """Time zero of the charts: the event's start, else its first minute window (a run without `started`)."""
    if summary.get("started_at") is not None:
        return int(summary["started_at"])
    firsts = [c["minute"] for c in summary.get("attendance_curve") or ()] + [m["window_start"] for m in minutes]
    return min(firsts) if firsts else None


def audience_rows(summary: dict, minutes: list[dict]) -> list[dict]:
    """The audience per minute: the summary's attendance curve when it has one (final), else the minute windows
    (a running event: the live snapshot has no curve). Same shape either way, sorted by minute."""
    curve = summary.get("attendance_curve")
    if curve:
        return sorted(curve, key=lambda c: c["minute"])
    return [
        {"minute": m["window_start"], "attendees_start": m["attendees_start"], "attendees_end": m["attendees_end"],
         "peak_concurrent": m["peak_concurrent"], "joins": m["joins"], "leaves": m["leaves"]}
        for m in sorted(minutes, key=lambda m: m["window_start"])
    ]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _when(ms: int | None) -> str:
    if ms is None:
        return "–"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def headline(summary: dict) -> str:
    """The one-line summary the CLI prints (and the report's first figure line)."""
    return (
        f"{summary['event_id']} ({summary.get('status', '?')}): {summary.get('registrations', 0)} registrations, "
        f"{summary.get('unique_attendees', 0)} unique attendees, attendance rate "
        f"{_pct(summary.get('attendance_rate'))}, peak {summary.get('attendees_peak', 0)}, avg dwell "
        f"{summary.get('avg_dwell_seconds', 0) / 60:.1f} min, engagement score {summary.get('engagement_score', 0):.1f}"
    )


def _header_lines(summary: dict, first_ms: int | None) -> list[str]:
    start, end = summary.get("started_at"), summary.get("ended_at")
    length = f" ({(end - start) / MINUTE_MS:.0f} min)" if start is not None and end is not None else ""
    walk_ins = summary.get("walk_ins")
    lines = [
        f"Registrations {summary.get('registrations', 0)}   ·   Unique attendees {summary.get('unique_attendees', 0)}"
        + (f" ({walk_ins} walk-ins)" if walk_ins else "")
        + f"   ·   Attendance rate {_pct(summary.get('attendance_rate'))}"
        + f"   ·   Peak {summary.get('attendees_peak', 0)}",
        (f"Average dwell {summary.get('avg_dwell_seconds', 0) / 60:.1f} min   ·   Engagement score "
         f"{summary.get('engagement_score', 0):.1f} / 100"),
        f"Event {summary['event_id']}   ·   start {_when(start)}   ·   end {_when(end)}{length}",
    ]
    grades = summary.get("leads_by_grade")
    if grades:
        lines.append("Leads " + "  ".join(f"{g} {grades.get(g, 0)}" for g in "ABCD")
                     + f"   ·   MQLs {summary.get('mqls', 0)}")
    status = summary.get("status", "?")
    if status != "ended" or "attendance_curve" not in summary:
        lines.append(f"LIVE SNAPSHOT (status {status}, as of {_when(summary.get('as_of'))}): not the final summary")
    elif start is None and first_ms is not None:
        lines.append("no `started` record: minutes are counted from the first minute window")
    return lines


def figure(summary: dict, minutes: list[dict]) -> Figure:
    """The report as a matplotlib Figure (no pyplot: no global state, no display).

    Each plotted series carries a gid (`audience`, `peak`, `joins`, `leaves`, `timeouts`, `interactions:<type>`),
    so tests and notebooks can read back exactly what was drawn.
    """
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    minutes = sorted(minutes, key=lambda m: m["window_start"])
    rows = audience_rows(summary, minutes)
    t0 = origin_ms(summary, minutes)

    def x(ms: int) -> float:  # minutes since start
        return (ms - t0) / MINUTE_MS

    fig = Figure(figsize=(12, 11), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    head, audience, flow, talk = fig.subplots(4, 1, height_ratios=[1.0, 2.2, 1.6, 2.0])
    audience.sharex(flow)
    talk.sharex(flow)
    head.axis("off")
    title = summary.get("title") or summary["event_id"]
    head.set_title(f"LivePulse report: {title}", fontsize=16, fontweight="bold", loc="left")
    head.text(0.0, 1.0, "\n".join(_header_lines(summary, t0)), va="top", ha="left", fontsize=11.5,
              family="DejaVu Sans", linespacing=1.7, transform=head.transAxes)

    if t0 is None or not rows:
        for ax in (audience, flow, talk):
            ax.text(0.5, 0.5, "no minute windows for this event yet", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        return fig

    # Audience: attendees present at each window's start and end, and the peak within each minute.
    xs, ys = [], []
    for r in rows:
        xs += [x(r["minute"]), x(r["minute"] + MINUTE_MS)]
        ys += [r["attendees_start"], r["attendees_end"]]
    audience.fill_between(xs, ys, alpha=0.15, color="#4C72B0")
    audience.plot(xs, ys, color="#4C72B0", lw=2, label="attendees present", gid="audience")
    audience.plot([x(r["minute"]) for r in rows] + [x(rows[-1]["minute"] + MINUTE_MS)],
                  [r["peak_concurrent"] for r in rows] + [rows[-1]["peak_concurrent"]],
                  drawstyle="steps-post", color="#4C72B0", lw=1, ls=":", label="peak within the minute", gid="peak")
    for n, d in enumerate(summary.get("drop_off_minutes") or ()):
        audience.axvspan(x(d["minute"]), x(d["minute"] + MINUTE_MS), color="#C44E52", alpha=0.15, lw=0,
                         label="drop-off minute" if n == 0 else None)
    audience.set_title("Audience")
    audience.set_ylabel("attendees present")
    audience.set_ylim(bottom=0)

    # Joins up, leaves down (idle timeouts, when the minute windows are there, as the darker part).
    centers = [x(r["minute"]) + 0.5 for r in rows]
    flow.bar(centers, [r["joins"] for r in rows], width=0.85, color="#55A868", label="joins", gid="joins")
    flow.bar(centers, [-r["leaves"] for r in rows], width=0.85, color="#C44E52", label="leaves", gid="leaves")
    if minutes:
        flow.bar([x(m["window_start"]) + 0.5 for m in minutes], [-m["timeouts"] for m in minutes], width=0.85,
                 color="#7A1F22", label="of which idle timeouts", gid="timeouts")
    flow.axhline(0, color="black", lw=0.8)
    flow.set_title("Joins and leaves per minute")
    flow.set_ylabel("sessions (leaves below 0)")

    # Interactions per minute, stacked by type, totals in the legend.
    if minutes:
        bottom = [0] * len(minutes)
        mx = [x(m["window_start"]) + 0.5 for m in minutes]
        for field_name, _, label, colour in INTERACTION_SERIES:
            heights = [m[field_name] for m in minutes]
            talk.bar(mx, heights, bottom=bottom, width=0.85, color=colour, label=f"{label} ({sum(heights)})",
                     gid=f"interactions:{field_name}")
            bottom = [b + h for b, h in zip(bottom, heights)]
        talk.set_ylim(0, max(1, max(bottom)) * 1.1)
    else:
        talk.text(0.5, 0.5, "no minute windows on the minute topic", ha="center", va="center",
                  transform=talk.transAxes, color="grey")
    talk.set_title("Interactions per minute")
    talk.set_ylabel("interactions")
    talk.set_xlabel("minutes since start" + ("" if summary.get("started_at") is not None else " (first window)"))

    end = summary.get("ended_at")
    for ax in (audience, flow, talk):
        ax.axvline(0, color="grey", lw=1, ls="--", label="start" if ax is audience else None)
        if end is not None:
            ax.axvline(x(end), color="black", lw=1, ls="--", label="end" if ax is audience else None)
        elif summary.get("as_of") is not None:  # a running event: where its clock is
            ax.axvline(x(summary["as_of"]), color="#DD8452", lw=1, ls="--", label="now" if ax is audience else None)
        ax.grid(axis="y", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    return fig


def render(summary: dict, minutes: list[dict], path: Path) -> Path:
    """Draw the report of `summary` (a final summary or a live snapshot) and its minute windows into a PNG."""
    fig = figure(summary, minutes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# ----------------------------------------------------------------------------------------------- reading
@dataclass
class _Read:
    summary: dict | None = None
    minutes: dict[int, dict] = field(default_factory=dict)  # window_start -> last record
    live: dict | None = None
    known: dict[str, None] = field(default_factory=dict)  # event ids of the summary topic, in order seen


def _event_of(key: bytes | None, value: bytes | None) -> tuple[str | None, dict | None]:
    import orjson

    if value is None:
        return (key.decode(errors="replace") if key else None), None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    if key is not None:
        return key.decode(errors="replace"), obj
    return obj.get("event_id"), obj


async def _scan(settings: Settings, topics: Iterable[str], deadline: float, on_record) -> None:
    """Read every partition of `topics` from its first offset to its true end offset (kafka.end_offsets: the
    embedded broker's ListOffsets lags), calling on_record(topic, key, value). Missing topics are empty; they are
    not created (a metadata request naming a missing topic would auto-create it)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from streams import kafka

    loop = asyncio.get_running_loop()
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(settings))
    await admin.start()
    try:
        meta = {t["topic"]: t for t in await admin.describe_topics()}  # all topics: creates nothing
    finally:
        await admin.close()
    tps = [TopicPartition(t, p["partition"]) for t in topics if t in meta
           for p in sorted(meta[t]["partitions"], key=lambda p: p["partition"])]
    if not tps:
        return
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        first = await consumer.beginning_offsets(tps)
        listed = await consumer.end_offsets(tps)
        ends = await kafka.end_offsets(settings, {(tp.topic, tp.partition): off for tp, off in listed.items()},
                                       timeout=max(1.0, min(10.0, deadline - loop.time())))
        end = {tp: ends[(tp.topic, tp.partition)] for tp in tps}
        todo = {tp for tp in tps if end[tp] > first[tp]}
        if not todo:
            return
        consumer.assign(sorted(todo))
        for tp in todo:
            consumer.seek(tp, first[tp])
        while todo:
            left = deadline - loop.time()
            if left <= 0:
                behind = {f"{tp.topic}[{tp.partition}]": end[tp] - await consumer.position(tp) for tp in todo}
                raise TimeoutError(f"reading the topics did not finish in time; records left: {behind}")
            batches = await consumer.getmany(timeout_ms=int(min(500, left * 1000)) or 1)
            for tp, records in batches.items():
                for r in records:
                    if r.offset < end[tp]:
                        on_record(tp.topic, r.key, r.value)
            for tp in list(todo):
                if await consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()


async def fetch(settings: Settings, event_id: str, timeout_s: float = 30.0) -> tuple[dict | None, list[dict]]:
    """The summary and minute windows of `event_id` as consumers see them after de-duplication.

    Returns (the last summary of the event -- or, before its summary exists, its latest live snapshot -- and its
    minute windows sorted by window start, the last record per window start). Raises UnknownEvent when no topic
    holds anything for the event, kafka.KafkaUnavailable when the broker does not answer, TimeoutError when the
    topics cannot be read to their end within `timeout_s`.
    """
    read = await _collect(settings, event_id, timeout_s)
    if read.summary is None and read.live is None and not read.minutes:
        raise UnknownEvent(event_id, list(read.known))
    return (read.summary or read.live), [read.minutes[k] for k in sorted(read.minutes)]


async def _collect(settings: Settings, event_id: str, timeout_s: float) -> _Read:
    from streams import kafka

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    await kafka.wait_for_broker(settings, timeout=min(BROKER_WAIT_S, timeout_s))
    read = _Read()

    def on_record(topic: str, key: bytes | None, value: bytes | None) -> None:
        eid, obj = _event_of(key, value)
        if topic == settings.topic_summary and eid is not None:
            read.known[eid] = None
        if eid != event_id or obj is None:
            return
        if topic == settings.topic_summary:
            read.summary = obj  # upsert: the last one wins
        elif topic == settings.topic_minute and isinstance(obj.get("window_start"), int):
            read.minutes[obj["window_start"]] = obj
        elif topic == settings.topic_live and (read.live is None or obj.get("as_of", 0) >= read.live.get("as_of", 0)):
            read.live = obj

    await _scan(settings, [settings.topic_summary, settings.topic_minute], deadline, on_record)
    if read.summary is None:  # still running (or its summary not out yet): the live topic is compacted, cheap
        await _scan(settings, [settings.topic_live], deadline, on_record)
    return read


# ----------------------------------------------------------------------------------------------- command
class _Exit(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@click.command("report")
@click.argument("event_id")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG file to write  [default: report-<EVENT_ID>.png]")
@click.option("--broker", help="Bootstrap servers, kafka://host:port[,...]  [default: LIVEPULSE_BROKER or "
                               "kafka://localhost:9092]")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds to connect and read the topics.")
def report_command(event_id: str, output: Path | None, broker: str | None, timeout: float) -> None:
    """Render a PNG report (audience, joins/leaves, interactions, key figures) of one webinar from the summary,
    minute and live topics, without Grafana."""
    from aiokafka.errors import KafkaError
    from pydantic import ValidationError

    from streams.kafka import KafkaUnavailable, describe
    from streams.settings import Settings

    try:
        settings = Settings(**({"broker": broker} if broker else {}))
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(f"invalid settings: {errors}") from None
    try:
        _matplotlib()  # fail before reading the topics, not after
    except ReportUnavailable as exc:
        raise _Exit(str(exc)) from None
    output = output or Path(f"report-{event_id}.png")
    started = time.monotonic()
    try:
        summary, minutes = asyncio.run(fetch(settings, event_id, timeout))
    except UnknownEvent as exc:
        known = exc.known[-10:]
        listing = (f"; event ids on {settings.topic_summary}: {', '.join(known)}"
                   + (f" (and {len(exc.known) - len(known)} more)" if len(exc.known) > len(known) else "")
                   if known else f"; {settings.topic_summary} holds no summaries")
        raise _Exit(f"no summary, minute windows or live snapshot for event {event_id!r}{listing}", 2) from None
    except KafkaUnavailable as exc:
        raise _Exit(f"{exc} (start one with `livepulse broker` or set --broker/LIVEPULSE_BROKER)") from None
    except TimeoutError as exc:
        raise _Exit(f"{describe(settings)}: {exc} (raise --timeout)") from None
    except (KafkaError, OSError, ValueError) as exc:
        raise _Exit(f"reading from {describe(settings)} failed: {type(exc).__name__}: {exc}") from None
    if summary is None:
        raise _Exit(f"event {event_id!r} has {len(minutes)} minute windows but no summary or live snapshot yet; "
                    "try again once the worker has published one")
    try:
        render(summary, minutes, output)
    except OSError as exc:
        raise _Exit(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output}  ({len(minutes)} minute windows, read in {time.monotonic() - started:.1f} s)")
    click.echo(headline(summary))
