"""The simulator: reproducible byte for byte, realistic in shape, faulty in the bounded ways it promises."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict

import click
import orjson
import pytest
from click.testing import CliRunner

from streams.broker import free_port
from streams.ingest.decode import Rejection, decode_event, decode_interaction
from streams.processor import RawRecord
from streams.settings import Settings
from streams.simulate.cli import parse_duration, parse_start, replay_command, simulate_command
from streams.simulate.produce import pacing_anchor, read_jsonl, write_jsonl
from streams.simulate.scenario import (
    CHANNEL_BEHAVIOUR,
    FIXED_START_MS,
    LOBBY_MS,
    ScenarioConfig,
    SimRecord,
    concurrent_events,
    generate,
    generate_many,
)
from streams.testing import run_records

NOW = FIXED_START_MS + 30 * 86_400_000  # "now" for the decoder: a month after the simulated webinars


def livepulse(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams", *args], check=False, capture_output=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _decoded(records):
    good, bad = [], []
    for r in records:
        d = (decode_event if r.topic == "events" else decode_interaction)(r.value, now_ms=NOW)
        (bad if isinstance(d, Rejection) else good).append(d)
    return good, bad


# --- reproducibility -------------------------------------------------------------------------------------------

def test_same_seed_same_bytes_through_the_cli(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    for path, seed in ((a, "7"), (b, "7"), (c, "8")):
        done = livepulse("simulate", "--seed", seed, "-o", str(path))
        assert done.returncode == 0, done.stderr.decode()
        assert b"wrote" in done.stderr
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    # the file holds exactly the generated records, bytes included
    assert read_jsonl(a) == generate(ScenarioConfig(seed=7))


def test_stdout_output_equals_file_output(tmp_path):
    runner = CliRunner()
    to_stdout = runner.invoke(simulate_command, ["--seed", "4", "--registrants", "30", "-o", "-"])
    assert to_stdout.exit_code == 0, to_stdout.output
    path = tmp_path / "x.jsonl"
    assert runner.invoke(simulate_command, ["--seed", "4", "--registrants", "30", "-o", str(path)]).exit_code == 0
    assert to_stdout.stdout_bytes == path.read_bytes()


def test_jsonl_round_trip_is_byte_exact_also_for_malformed_records(tmp_path):
    records = generate(ScenarioConfig(seed=5, registrants=300, malformed_rate=0.05))
    path = tmp_path / "r.jsonl"
    write_jsonl(records, path)
    back = read_jsonl(path)
    assert back == records
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert sum("value_b64" in line for line in lines) > 0, "invalid JSON is kept as raw bytes"
    assert all(line["key"] == "webinar-5" and line["topic"] in ("interactions", "events") for line in lines)


def test_seed_and_options_change_the_stream():
    base = generate(ScenarioConfig(seed=1, registrants=50))
    assert generate(ScenarioConfig(seed=1, registrants=50)) == base
    assert generate(ScenarioConfig(seed=2, registrants=50)) != base
    assert generate(ScenarioConfig(seed=1, registrants=50, duplicate_rate=0.3)) != base


# --- realism ---------------------------------------------------------------------------------------------------

def test_the_webinar_looks_like_one():
    cfg = ScenarioConfig(seed=3, registrants=500)
    records = generate(cfg)
    good, bad = _decoded(records)
    assert 0 < len(bad) < 40  # a few malformed records, each rejected by the real decoder
    by_type = defaultdict(set)
    for d in good:
        by_type[d["type"]].add(d.get("attendee_id"))
    registered, present = by_type["registration"], by_type["join"]
    assert len(registered) == 500
    assert 0.3 <= len(registered & present) / len(registered) <= 0.6, "attendance rate like real webinars"
    assert present - registered, "walk-ins"
    assert by_type["poll_vote"] and by_type["question"] and by_type["cta_click"] and by_type["chat"]
    assert len(present - by_type["leave"]) > 10, "some attendees vanish without a leave"
    assert len(by_type["poll_vote"]) > 0.4 * len(present), "most of the room votes"

    events = [d for d in good if "attendee_id" not in d]
    assert [e["type"] for e in events] == ["scheduled", "started", "ended"]
    scheduled = events[0]
    assert orjson.loads(records[0].value)["type"] == "scheduled", "the announcement comes before everything"
    assert scheduled["scheduled_start"] == cfg.start and scheduled["scheduled_end"] == cfg.end
    assert scheduled["cost"] > 0 and scheduled["currency"] == "EUR" and scheduled["key_accounts"]
    assert events[1]["ts"] == cfg.start and events[2]["ts"] == cfg.end
    key_accounts = set(scheduled["key_accounts"])
    assert any(d.get("account_id") in key_accounts for d in good if d["type"] == "join")

    interactions = [d for d in good if "attendee_id" in d]
    regs = [d for d in interactions if d["type"] == "registration"]
    assert all(d["ts"] < cfg.start for d in regs) and {d["channel"] for d in regs} >= {"email", "social", "partner"}
    on_the_day = sum(cfg.start - d["ts"] < 86_400_000 for d in regs) / len(regs)
    assert 0.15 <= on_the_day <= 0.4, "about a quarter register on the day"
    joins = [d["ts"] for d in interactions if d["type"] == "join"]
    assert any(t < cfg.start for t in joins), "early lobby joins"
    assert sum(t <= cfg.start + 300_000 for t in joins) > 0.6 * len(joins), "a join ramp in the first minutes"
    assert any(t > cfg.start + 600_000 for t in joins), "late joiners"
    assert any(isinstance(orjson.loads(r.value).get("ts"), str) for r in records[:500]
               if r.topic == "interactions" and r.value.startswith(b"{") and r.value.endswith(b"}")), \
        "some clients send RFC 3339 times"
    # the mid-event drop: the minute after drop_at has many more leaves than a typical minute
    leaves = Counter((d["ts"] - cfg.start) // 60_000 for d in interactions if d["type"] == "leave")
    drop_minute = int(cfg.duration_s * cfg.drop_at) // 60
    assert leaves[drop_minute] > 3 * (sum(leaves.values()) / max(1, len(leaves)))


def test_channels_bring_different_audiences():
    """Partner invitations attend more and stay longer than paid social (figures through the real processor)."""
    cfg = ScenarioConfig(seed=3, registrants=1000)
    settings = Settings()
    raw = [RawRecord(settings.topic_events if r.topic == "events" else settings.topic_interactions, 0, n, r.key,
                     r.value) for n, r in enumerate(generate(cfg))]
    (summary,) = run_records(raw, settings, wall_start=NOW / 1000).summaries.values()
    rows = {r["channel"]: r for r in summary["channels"]}
    assert set(CHANNEL_BEHAVIOUR) | {"walk_in"} == set(rows)
    partner, paid = rows["partner"], rows["paid_social"]
    assert partner["attendance_rate"] > 1.5 * paid["attendance_rate"]
    assert partner["avg_dwell_seconds"] > 1.2 * paid["avg_dwell_seconds"]
    assert partner["engagement_score"] > paid["engagement_score"]
    assert paid["cost"] == cfg.channel_costs["paid_social"] and paid["cost_per_mql"] > partner["cost_per_mql"]
    assert 0.35 <= summary["attendance_rate"] <= 0.55, "the channel mix keeps the overall attendance realistic"


def test_heartbeats_every_30_s_while_present():
    good, _ = _decoded(generate(ScenarioConfig(seed=9, registrants=300, reorder_rate=0, duplicate_rate=0)))
    by_attendee = defaultdict(list)
    for d in good:
        if d.get("type") in ("join", "leave", "heartbeat"):
            by_attendee[d["attendee_id"]].append(d)
    gaps = []
    for recs in by_attendee.values():
        recs.sort(key=lambda d: d["ts"])
        beats = []
        for d in recs + [{"type": "leave"}]:
            if d["type"] == "heartbeat":
                beats.append(d["ts"])
            elif d["type"] == "leave":  # a session ends: gaps are only measured inside one
                gaps += [b - a for a, b in itertools.pairwise(beats)]
                beats = []
    assert len(gaps) > 1000
    assert all(27_000 <= g <= 33_000 for g in gaps), "about every 30 s (jittered)"


def test_faults_stay_within_their_bounds():
    cfg = ScenarioConfig(seed=11, registrants=400, duplicate_rate=0.05, reorder_rate=0.1, max_delay_s=20)
    records = generate(cfg)
    good, _ = _decoded(records)
    interactions = [d for d in good if "attendee_id" in d]
    ids = Counter(d["id"] for d in interactions)
    assert len(ids) == len({d["id"]: None for d in interactions})
    dup_ids = {i for i, n in ids.items() if n > 1}
    assert 0.03 < len(dup_ids) / len(ids) < 0.07, "duplicates are re-sent with the same id"
    values = Counter(r.value for r in records if r.topic == "interactions")
    assert sum(n > 1 for n in values.values()) == len(dup_ids), "a duplicate is an exact copy"
    running, worst, out_of_order = 0, 0, 0
    for d in interactions:
        if d["ts"] < running:
            out_of_order += 1
            worst = max(worst, running - d["ts"])
        running = max(running, d["ts"])
    assert out_of_order > 0
    assert worst <= 20_000, "never more than max_delay behind the newest record"
    # no faults at all when asked for none
    clean = generate(ScenarioConfig(seed=11, registrants=100, duplicate_rate=0, reorder_rate=0, malformed_rate=0))
    good, bad = _decoded(clean)
    assert not bad and len({d.get("id") for d in good if "id" in d}) == len(good) - 3
    ts = [d["ts"] for d in good if "id" in d]
    assert ts == sorted(ts)


def test_malformed_records_are_rejected_for_several_reasons():
    records = generate(ScenarioConfig(seed=2, registrants=400, malformed_rate=0.05))
    _, bad = _decoded(records)
    reasons = Counter(r.reason for r in bad)
    assert {"invalid_json", "schema_violation", "bad_timestamp"} <= reasons.keys()


def test_concurrent_events_interleave_and_keep_their_keys_and_order():
    cfgs = concurrent_events(5, 3, registrants=60)
    records = generate_many(cfgs)
    assert Counter(r.key for r in records) == {c.event_id.encode(): len(generate(c)) for c in cfgs}
    for c in cfgs:  # each event's own delivery order (and so its reordering bound) is unchanged
        assert [r for r in records if r.key == c.event_id.encode()] == generate(c)
    good, _ = _decoded(records)
    assert {d["event_id"] for d in good} == {c.event_id for c in cfgs}
    for r in records:
        try:
            value = orjson.loads(r.value)
        except orjson.JSONDecodeError:
            continue  # a deliberately malformed record
        if isinstance(value, dict) and "event_id" in value:
            assert value["event_id"].encode() == r.key
    # interleaved by event time: the stream's running max ts never jumps far back to another event
    live = [r.ts for r in records if r.ts >= min(c.start for c in cfgs)]
    assert max(max(live[:i + 1]) - t for i, t in enumerate(live)) <= 20_000
    with pytest.raises(ValueError):
        generate_many([ScenarioConfig(seed=1), ScenarioConfig(seed=1)])


def test_records_are_compact():
    records = generate(ScenarioConfig(seed=7))
    assert sum(len(r.value) for r in records) / len(records) < 160


# --- CLI -------------------------------------------------------------------------------------------------------

def test_option_parsing():
    assert parse_duration("1800") == 1800 and parse_duration("30m") == 1800
    assert parse_duration("1h30m") == 5400 and parse_duration("1.5h") == 5400 and parse_duration("90s") == 90
    for bad in ("forever", "", "10", "-5m"):
        with pytest.raises(click.BadParameter):
            parse_duration(bad)
    assert parse_start("fixed") == (FIXED_START_MS, None)
    assert parse_start("2026-03-01T15:00:00Z")[0] == parse_start("2026-03-01T16:00:00+01:00")[0]
    start, anchor = parse_start("now", now_ms=1_800_000_000_123)
    assert anchor == 1_800_000_000_000 and start == anchor + LOBBY_MS
    for bad in ("yesterday", "2026-03-01T15:00:00"):
        with pytest.raises(click.BadParameter):
            parse_start(bad)


def test_bad_options_give_clear_errors(tmp_path):
    runner = CliRunner()
    done = runner.invoke(simulate_command, ["--duration", "forever", "-o", str(tmp_path / "x.jsonl")])
    assert done.exit_code == 2 and "forever" in done.output
    done = runner.invoke(simulate_command, ["--speed", "10", "-o", str(tmp_path / "x.jsonl")])
    assert done.exit_code == 2 and "--output" in done.output
    done = runner.invoke(simulate_command, ["--duplicate-rate", "2", "-o", "-"])
    assert done.exit_code == 2
    done = runner.invoke(simulate_command, ["--broker", "nonsense"])
    assert done.exit_code == 2 and "kafka://host:port" in done.output
    done = runner.invoke(simulate_command, ["-o", str(tmp_path / "no" / "such" / "dir.jsonl")])
    assert done.exit_code == 1 and "cannot write" in done.output
    done = livepulse("replay", str(tmp_path / "missing.jsonl"))
    assert done.returncode == 2 and b"does not exist" in done.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"topic": "interactions", "key": "w", "value": {"ts": 1}}\nnot json\n')
    done = runner.invoke(replay_command, [str(broken)])
    assert done.exit_code == 1 and "broken.jsonl:2" in done.output


def test_unreachable_broker_is_a_clear_error_not_a_traceback():
    done = livepulse("simulate", "--registrants", "5", "--broker", f"kafka://127.0.0.1:{free_port()}",
                     "--broker-timeout", "1")
    assert done.returncode == 1
    assert b"did not answer within 1 s" in done.stderr and b"Traceback" not in done.stderr


def test_pacing_starts_at_the_lobby():
    records = generate(ScenarioConfig(seed=1, registrants=20))
    assert pacing_anchor(records) == FIXED_START_MS - LOBBY_MS
    only = [SimRecord("interactions", b"e", b'{"type":"join"}', 5), SimRecord("interactions", b"e", b"{}", 3)]
    assert pacing_anchor(only) == 5


def test_write_jsonl_to_a_stream():
    out = io.BytesIO()
    assert write_jsonl(generate(ScenarioConfig(seed=1, registrants=5)), out) > 10
    assert out.getvalue().count(b"\n") > 10


# --- against the embedded broker -------------------------------------------------------------------------------

async def _consume(url: str, topics: list[str], expected: int, timeout: float = 60) -> list:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=url.split("://")[1], auto_offset_reset="earliest",
                                group_id=None)
    await consumer.start()
    got: list = []
    try:
        async def read() -> None:
            while len(got) < expected:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(msgs)
        await asyncio.wait_for(read(), timeout)
        extra = await consumer.getmany(timeout_ms=500)  # nothing more than was sent
        got.extend(m for msgs in extra.values() for m in msgs)
    finally:
        await consumer.stop()
    return got


@pytest.mark.integration
def test_simulate_and_replay_reach_the_broker(broker, tmp_path, topic_name):
    # simulate straight to Kafka: two concurrent webinars, both topics, keys = event ids
    topics = {"LIVEPULSE_TOPIC_INTERACTIONS": topic_name("interactions"), "LIVEPULSE_TOPIC_EVENTS": topic_name("events")}
    args = ["--seed", "2", "--events", "2", "--registrants", "30", "--duration", "10m"]
    done = livepulse("simulate", *args, "--broker", broker, env=topics)
    assert done.returncode == 0, done.stderr.decode()
    assert b"sent" in done.stderr
    expected = generate_many(concurrent_events(2, 2, registrants=30, duration_s=600))
    got = asyncio.run(_consume(broker, list(topics.values()), len(expected)))
    assert len(got) == len(expected)
    assert Counter((m.topic, m.key, m.value) for m in got) == Counter(
        (topics["LIVEPULSE_TOPIC_" + r.topic.upper()], r.key, r.value) for r in expected)
    assert {m.key for m in got} == {b"webinar-2-0", b"webinar-2-1"}
    for key in (b"webinar-2-0", b"webinar-2-1"):  # one key, one partition: the event's delivery order is kept
        sent = [r.value for r in expected if r.key == key and r.topic == "interactions"]
        assert [m.value for m in sorted(got, key=lambda m: m.offset)
                if m.key == key and m.topic == topics["LIVEPULSE_TOPIC_INTERACTIONS"]] == sent

    # replay of a recorded file sends the same records (paced: 7 min of event time at 600x >= 0.6 s)
    path = tmp_path / "w.jsonl"
    assert livepulse("simulate", "--seed", "3", "--registrants", "20", "--duration", "2m",
                     "-o", str(path)).returncode == 0
    recorded = read_jsonl(path)
    topics = {"LIVEPULSE_TOPIC_INTERACTIONS": topic_name("interactions"), "LIVEPULSE_TOPIC_EVENTS": topic_name("events")}
    started = time.monotonic()
    done = livepulse("replay", str(path), "--broker", broker, "--speed", "600", env=topics)
    assert done.returncode == 0, done.stderr.decode()
    assert time.monotonic() - started >= 0.6
    got = asyncio.run(_consume(broker, list(topics.values()), len(recorded)))
    assert sorted(m.value for m in got) == sorted(r.value for r in recorded)
    assert {m.key for m in got} == {b"webinar-3"}


@pytest.mark.parametrize("duration_s", [60, 300, 3 * 3600])
def test_short_and_long_webinars_stay_inside_their_time(duration_s):
    cfg = ScenarioConfig(seed=duration_s, registrants=60, duration_s=duration_s)
    good, _ = _decoded(generate(cfg))
    joins = [d["ts"] for d in good if d.get("type") == "join"]
    assert joins and cfg.start - LOBBY_MS <= min(joins) and max(joins) < cfg.end
    assert max(d["ts"] for d in good) <= cfg.end + 120_000, "only a few records trail the end"
