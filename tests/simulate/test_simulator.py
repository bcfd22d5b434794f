"""The simulator: reproducible byte for byte, realistic in shape, faulty in the bounded ways it promises."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter, defaultdict

import orjson
import pytest

from streams.ingest.decode import Rejection, decode_event, decode_interaction
from streams.simulate.produce import read_jsonl
from streams.simulate.scenario import ScenarioConfig, concurrent_events, generate, generate_many

NOW = 1_768_489_200_000 + 30 * 86_400_000


def livepulse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams", *args], capture_output=True, timeout=120)


def test_same_seed_same_bytes_through_the_cli(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    for path, seed in ((a, "7"), (b, "7"), (c, "8")):
        done = livepulse("simulate", "--seed", seed, "--registrants", "120", "-o", str(path))
        assert done.returncode == 0, done.stderr.decode()
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert [r.value for r in read_jsonl(a)] == [r.value for r in generate(ScenarioConfig(seed=7, registrants=120))]


def test_bad_options_give_clear_errors(tmp_path):
    done = livepulse("simulate", "--duration", "forever", "-o", str(tmp_path / "x.jsonl"))
    assert done.returncode == 2 and b"forever" in done.stderr
    done = livepulse("replay", str(tmp_path / "missing.jsonl"))
    assert done.returncode == 2 and b"does not exist" in done.stderr


def _decoded(records):
    good, bad = [], 0
    for r in records:
        d = (decode_event if r.topic == "events" else decode_interaction)(r.value, now_ms=NOW)
        if isinstance(d, Rejection):
            bad += 1
        else:
            good.append(d)
    return good, bad


def test_the_webinar_looks_like_one():
    cfg = ScenarioConfig(seed=3, registrants=500)
    good, bad = _decoded(generate(cfg))
    assert 0 < bad < 40  # a few malformed records, each rejected by the real decoder
    by_type = defaultdict(set)
    for d in good:
        by_type[d["type"]].add(d.get("attendee_id"))
    registered = by_type["registration"]
    present = by_type["join"]
    assert len(registered) == 500
    assert 0.3 <= len(registered & present) / len(registered) <= 0.6
    assert present - registered, "walk-ins"
    assert by_type["poll_vote"] and by_type["question"] and by_type["cta_click"] and by_type["chat"]
    assert len(present - by_type["leave"]) > 10, "some attendees vanish without a leave"
    assert {"scheduled", "started", "ended"} <= by_type.keys()
    beats = sorted({d["id"]: d["ts"] for d in good  # by id: duplicates are the same heartbeat
                    if d["type"] == "heartbeat" and d["attendee_id"] == min(present)}.values())
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    assert gaps and all(25_000 <= g <= 35_000 or g > 60_000 for g in gaps)  # ~30 s apart (longer: a reconnect)


def test_faults_stay_within_their_bounds():
    cfg = ScenarioConfig(seed=11, registrants=400, duplicate_rate=0.05, reorder_rate=0.1, max_delay_s=20)
    good, _ = _decoded(generate(cfg))
    interactions = [d for d in good if "attendee_id" in d]
    ids = Counter(d["id"] for d in interactions)
    assert any(n > 1 for n in ids.values()), "duplicates are re-sent with the same id"
    running, worst, out_of_order = 0, 0, 0
    for d in interactions:
        if d["ts"] < running:
            out_of_order += 1
            worst = max(worst, running - d["ts"])
        running = max(running, d["ts"])
    assert out_of_order > 0
    assert worst <= 20_000, "never later than max_delay behind the newest record"


def test_concurrent_events_interleave_and_keep_their_keys():
    records = generate_many(concurrent_events(5, 3, registrants=60))
    keys = Counter(r.key for r in records)
    assert len(keys) == 3
    good, _ = _decoded(records)
    assert {d["event_id"].encode() for d in good} == set(keys)
    for r in records:
        try:
            value = orjson.loads(r.value)
        except orjson.JSONDecodeError:
            continue  # a deliberately malformed record
        if isinstance(value, dict) and "event_id" in value:
            assert value["event_id"].encode() == r.key


@pytest.mark.integration
def test_simulate_and_replay_reach_the_broker(broker, tmp_path, topic_name):
    from aiokafka import AIOKafkaConsumer

    path = tmp_path / "w.jsonl"
    assert livepulse("simulate", "--seed", "2", "--registrants", "30", "-o", str(path)).returncode == 0
    sent = read_jsonl(path)
    interactions = topic_name("interactions")
    env_topics = {"LIVEPULSE_TOPIC_INTERACTIONS": interactions, "LIVEPULSE_TOPIC_EVENTS": topic_name("events")}
    import os

    done = subprocess.run([sys.executable, "-m", "streams", "replay", str(path), "--broker", broker],
                          capture_output=True, timeout=120, env={**os.environ, **env_topics})
    assert done.returncode == 0, done.stderr.decode()

    async def read():
        consumer = AIOKafkaConsumer(interactions, bootstrap_servers=broker.split("://")[1],
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        got = []
        try:
            expected = sum(1 for r in sent if r.topic == "interactions")
            while len(got) < expected:
                for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                    got.extend(msgs)
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(asyncio.wait_for(read(), 60))
    assert sorted(m.value for m in got) == sorted(r.value for r in sent if r.topic == "interactions")
    assert {m.key for m in got} == {b"webinar-2"}
