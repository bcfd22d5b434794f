"""`livepulse report`: the PNG shows what the pipeline computed (checked on the drawn data, not just "a file
exists"), and the command reads the output topics as upserts (last summary, last minute per window start)."""

from __future__ import annotations

import asyncio
import functools
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.outputs import report
from streams.settings import Settings
from streams.simulate.scenario import ScenarioConfig, generate_many
from streams.testing import raw, run_records
from tests.conftest import free_port

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@functools.cache
def pipeline_outputs() -> dict[str, tuple[dict, list[dict]]]:
    """Two simulated webinars through the real Processor: event id -> (summary, its minute windows)."""
    settings = Settings()
    cfgs = [ScenarioConfig(seed=3, event_id="rep-a", registrants=80, duration_s=900),
            ScenarioConfig(seed=4, event_id="rep-b", registrants=40, duration_s=600, start=ScenarioConfig().start + 120_000)]
    topics = {"interactions": settings.topic_interactions, "events": settings.topic_events}
    records = [raw(topics[r.topic], r.value, key=r.key, offset=n) for n, r in enumerate(generate_many(cfgs))]
    got = run_records(records, settings, wall_start=cfgs[0].start / 1000)
    assert set(got.summaries) == {"rep-a", "rep-b"}
    return {eid: (got.summaries[eid], [m for m in got.minutes if m["event_id"] == eid]) for eid in got.summaries}


def drawn(fig, gid: str) -> tuple[list[float], list[float]]:
    """(x, y) of the line, or (bar centres, bar heights) of the bars, drawn with this gid."""
    for ax in fig.axes:
        for line in ax.lines:
            if line.get_gid() == gid:
                return list(map(float, line.get_xdata())), list(map(float, line.get_ydata()))
    bars = [p for ax in fig.axes for p in ax.patches if p.get_gid() == gid]
    assert bars, f"nothing drawn with gid {gid}"
    return [b.get_x() + b.get_width() / 2 for b in bars], [b.get_height() for b in bars]


# ---------------------------------------------------------------------------------------------- render
def test_report_draws_the_pipelines_summary_and_minutes(tmp_path: Path) -> None:
    summary, minutes = pipeline_outputs()["rep-a"]
    curve = summary["attendance_curve"]
    assert len(curve) > 10 and minutes, "a real webinar has a curve and minute windows"

    fig = report.figure(summary, minutes)
    # the audience curve is the summary's: each window's attendees at its start and at its end
    xs, ys = drawn(fig, "audience")
    assert ys == [float(v) for c in curve for v in (c["attendees_start"], c["attendees_end"])]
    start = summary["started_at"]
    assert xs == [(c["minute"] + d - start) / 60_000 for c in curve for d in (0, 60_000)]
    assert xs[0] < 0 < xs[-1], "lobby minutes before the start are drawn at negative minutes"
    _, peaks = drawn(fig, "peak")
    assert max(peaks) == summary["attendees_peak"]
    # joins up and leaves down, per minute, as in the curve
    _, joins = drawn(fig, "joins")
    _, leaves = drawn(fig, "leaves")
    assert joins == [c["joins"] for c in curve] and leaves == [-c["leaves"] for c in curve]
    # interactions per minute by type add up to the summary's totals (no late records in this scenario)
    for field_name, total_name, _, _ in report.INTERACTION_SERIES:
        _, heights = drawn(fig, f"interactions:{field_name}")
        assert len(heights) == len(minutes)
        assert sum(heights) == summary["interactions"][total_name], field_name
    assert sum(summary["interactions"][t] for _, t, _, _ in report.INTERACTION_SERIES) > 50
    header = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
    for figure_text in (f"Registrations {summary['registrations']}", f"Unique attendees {summary['unique_attendees']}",
                        f"Peak {summary['attendees_peak']}", f"{summary['engagement_score']:.1f} / 100",
                        f"{summary['avg_dwell_seconds'] / 60:.1f} min", "rep-a", "2026-01-15 15:00:00 UTC",
                        f"{summary['attendance_rate'] * 100:.0f}%"):
        assert figure_text in header, figure_text
    assert "LIVE SNAPSHOT" not in header

    out = report.render(summary, minutes, tmp_path / "sub" / "r.png")
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 30_000
    from matplotlib.image import imread

    pixels = imread(out)
    assert pixels.shape[:2] == (1100, 1200)
    assert pixels[..., :3].std() > 0.05, "not a blank image"


def test_running_event_is_drawn_from_its_minute_windows(tmp_path: Path) -> None:
    """Before the summary: a live snapshot has no curve; the audience comes from the minute windows so far."""
    summary, minutes = pipeline_outputs()["rep-b"]
    live = {k: v for k, v in summary.items() if k not in ("attendance_curve", "drop_off_minutes")}
    live.update(status="live", ended_at=None)
    so_far = sorted(minutes, key=lambda m: m["window_start"])[:6]
    fig = report.figure(live, list(reversed(so_far)))
    _, ys = drawn(fig, "audience")
    assert ys == [float(v) for m in so_far for v in (m["attendees_start"], m["attendees_end"])]
    _, chats = drawn(fig, "interactions:chats")
    assert chats == [m["chats"] for m in so_far]
    header = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "LIVE SNAPSHOT (status live" in header
    assert report.render(live, so_far, tmp_path / "live.png").read_bytes()[:8] == PNG_MAGIC


def test_missing_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    summary, minutes = pipeline_outputs()["rep-a"]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(report.ReportUnavailable, match=r"pip install 'livepulse\[report\]'"):
        report.render(summary, minutes, tmp_path / "r.png")
    result = CliRunner().invoke(main, ["report", "rep-a", "--broker", f"kafka://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert "pip install 'livepulse[report]'" in result.output
    assert not (tmp_path / "r.png").exists()


def test_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "r.png"
    result = CliRunner().invoke(main, ["report", "rep-a", "--broker", f"kafka://127.0.0.1:{free_port()}",
                                       "--timeout", "2", "--output", str(out)])
    assert result.exit_code == 1, result.output
    assert "did not answer within 2 s" in result.output and "livepulse broker" in result.output
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- the command
@pytest.mark.integration
def test_report_command_reads_the_topics_as_upserts(broker: str, topic_name, tmp_path: Path) -> None:
    from streams.kafka import ensure_topics
    from tests.integration.harness import produce

    outputs = pipeline_outputs()
    settings = Settings(broker=broker, topic_summary=topic_name("summary"), topic_minute=topic_name("minute"),
                        topic_live=topic_name("live"))
    (a, a_minutes), (b, _) = outputs["rep-a"], outputs["rep-b"]
    # at-least-once: an earlier summary of rep-a and a first version of one minute window come before the final
    stale_a = dict(a, engagement_score=1.5, unique_attendees=1)
    first_window = dict(a_minutes[5], chats=999)
    live_c = [dict(b, event_id="rep-c", status="live", as_of=b["as_of"] - d, attendees_current=d)
              for d in (60_000, 0, 30_000)]
    for s in live_c:
        s.pop("attendance_curve"), s.pop("drop_off_minutes")
    records = [(settings.topic_summary, b"rep-a", stale_a), (settings.topic_minute, b"rep-a", first_window)]
    records += [(settings.topic_minute, b"rep-a", m) for m in a_minutes]
    records += [(settings.topic_summary, b"rep-b", b), (settings.topic_summary, b"rep-a", a)]
    records += [(settings.topic_live, b"rep-c", s) for s in live_c]
    records += [(settings.topic_minute, b"rep-a", a_minutes[0])]  # a re-sent window after the summary

    async def setup() -> None:
        await ensure_topics(settings, {settings.topic_summary: 2, settings.topic_minute: 3, settings.topic_live: 1})
        await produce(broker, [(t, k, orjson.dumps(v)) for t, k, v in records])

    asyncio.run(setup())

    got_summary, got_minutes = asyncio.run(report.fetch(settings, "rep-a", 30))
    assert got_summary == a, "the last summary of the event wins"
    assert got_minutes == sorted(a_minutes, key=lambda m: m["window_start"]), "one window per start, the last"
    live, minutes_c = asyncio.run(report.fetch(settings, "rep-c", 30))
    assert live["attendees_current"] == 0 and live["status"] == "live", "no summary: the newest live snapshot"
    assert minutes_c == []

    env = {"LIVEPULSE_TOPIC_SUMMARY": settings.topic_summary, "LIVEPULSE_TOPIC_MINUTE": settings.topic_minute,
           "LIVEPULSE_TOPIC_LIVE": settings.topic_live}
    runner = CliRunner()
    out = tmp_path / "a.png"
    result = runner.invoke(main, ["report", "rep-a", "--broker", broker, "--output", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert f"wrote {out}" in result.output and f"({len(a_minutes)} minute windows" in result.output
    assert report.headline(a) in result.output and "engagement score 1.5" not in result.output

    with runner.isolated_filesystem(temp_dir=tmp_path):
        result = runner.invoke(main, ["report", "rep-b", "--broker", broker], env=env)
        assert result.exit_code == 0, result.output
        assert Path("report-rep-b.png").read_bytes()[:8] == PNG_MAGIC, "default output name"

    result = runner.invoke(main, ["report", "no-such-webinar", "--broker", broker, "-o", str(tmp_path / "x.png")],
                           env=env)
    assert result.exit_code == 2, result.output
    assert "no-such-webinar" in result.output and "rep-a" in result.output and "rep-b" in result.output
    assert result.output.count("rep-a") == 1, "each known id listed once"
    assert not (tmp_path / "x.png").exists()
