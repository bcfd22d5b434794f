"""The ingest API against the real broker: each record accepted or rejected with the DLQ's reason, only valid
records produced (read back from the topic), API keys, size and count limits, hostile bodies."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import orjson
import pytest

from tests.gateway.harness import API_KEY, GatewayProcess
from tests.ingest.corpus import CORPUS, VALID
from tests.integration.harness import Pipeline, consume, parse_metrics

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway(broker, tmp_path):
    pipe = Pipeline(broker, tmp_path, partitions=2)
    gw = GatewayProcess(pipe, max_body_bytes="262144", max_records="100", body_timeout_s="1").start()
    try:
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()


def read_topic(gw: GatewayProcess, topic: str, n: int) -> list[tuple[bytes, bytes]]:
    got = asyncio.run(consume(gw.pipeline.broker, [topic], until=lambda r: len(r[topic]) >= n, timeout=30))
    return got[topic]


def test_each_record_is_accepted_or_rejected_with_the_dlq_reason_and_only_valid_ones_are_produced(gateway):
    lines, expected, valid = [], [], []
    for n, (name, value, reason) in enumerate(CORPUS):
        if not value or reason == "too_large":
            continue  # a blank NDJSON line is no record; too_large has its own test (the body cap is lower)
        good = orjson.dumps({"id": f"g{n}", "event_id": f"api-{n % 3}", "attendee_id": "a", "type": "chat",
                             "ts": int(time.time() * 1000)})
        lines += [good, value]
        expected += [("accepted", None), ("rejected", reason)]
        valid.append(good)
    for _, value in VALID:
        if len(value) < 60_000:
            lines.append(value)
            expected.append(("accepted", None))
            valid.append(value)
    status, _, body = gateway.post_api("/v1/interactions", b"\n".join(lines) + b"\n")
    assert status == 200, body
    assert [(r["status"], r.get("reason")) for r in body["results"]] == expected
    assert [r["index"] for r in body["results"]] == list(range(len(lines)))
    assert body["accepted"] == len(valid) and body["rejected"] == len(lines) - len(valid)
    assert all(r["error"] for r in body["results"] if r["status"] == "rejected")

    topic = gateway.pipeline.settings.topic_interactions
    records = read_topic(gateway, topic, len(valid))
    assert sorted(v for _, v in records) == sorted(valid), "exactly the valid records, as sent"
    assert all(k == orjson.loads(v)["event_id"].encode() for k, v in records), "keyed by event_id"
    m = parse_metrics(gateway.metrics_text())
    assert m[("livepulse_gateway_requests_total", (("route", "/v1/interactions"), ("status", "200")))] == 1
    assert m[("livepulse_gateway_records_total", (("kind", "interaction"),))] == len(valid)
    assert m[("livepulse_gateway_rejects_total", (("reason", "invalid_utf8"),))] == 2
    assert m[("livepulse_gateway_produce_latency_seconds_count", ())] == 1


def test_events_and_opportunities_as_a_json_array_keyed_like_their_topics(gateway):
    now = int(time.time() * 1000)
    events = [{"event_id": "api-ev", "type": "scheduled", "ts": now, "title": "Q&A 🎉",
               "scheduled_start": "2027-01-15T15:00:00Z"},
              {"event_id": "api-ev", "type": "started"},  # no ts
              {"event_id": "api-ev", "type": "started", "ts": now}]
    status, _, body = gateway.post_api("/v1/events", events)
    assert status == 200, body
    assert [(r["status"], r.get("reason")) for r in body["results"]] == [
        ("accepted", None), ("rejected", "schema_violation"), ("accepted", None)]
    opportunities = [{"opportunity_id": "o1", "organizer_id": "acme", "account_id": "x", "stage": "created",
                      "ts": now},
                     {"opportunity_id": "o2", "attendee_id": "a", "stage": "won", "ts": now},
                     {"opportunity_id": "o3", "stage": "won", "ts": now, "amount": 5}]
    status, _, body = gateway.post_api("/v1/opportunities", opportunities)
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == ["accepted", "accepted", "rejected"]
    s = gateway.pipeline.settings
    got = read_topic(gateway, s.topic_events, 2)
    assert [orjson.loads(v) for _, v in got] == [events[0], events[2]] and {k for k, _ in got} == {b"api-ev"}
    got = read_topic(gateway, s.topic_opportunities, 2)
    assert sorted((k, orjson.loads(v)["opportunity_id"]) for k, v in got) == [(b"acme", "o1"), (b"default", "o2")]


def test_api_keys(gateway):
    record = [{"id": "k1", "event_id": "api-auth", "attendee_id": "a", "type": "chat", "ts": int(time.time() * 1000)}]
    for headers, reason in [({}, "missing_api_key"), ({"Authorization": f"Basic {API_KEY}"}, "bad_api_key"),
                            ({"Authorization": "Bearer "}, "bad_api_key"),
                            ({"Authorization": f"Bearer {API_KEY}x"}, "bad_api_key")]:
        status, h, body = gateway.request("POST", "/v1/interactions", orjson.dumps(record), headers)
        assert (status, body["reason"]) == (401, reason), body
        assert h["www-authenticate"].startswith("Bearer")
    # the configured digest itself is not a key
    import hashlib
    status, _, _ = gateway.post_api("/v1/interactions", record, key=hashlib.sha256(API_KEY.encode()).hexdigest())
    assert status == 401
    m = parse_metrics(gateway.metrics_text())
    assert m[("livepulse_gateway_requests_total", (("route", "/v1/interactions"), ("status", "401")))] == 5
    assert m.get(("livepulse_gateway_records_total", (("kind", "interaction"),)), 0) == 0
    status, _, _ = gateway.post_api("/v1/interactions", record)
    assert status == 200


def test_size_and_count_limits(gateway):
    now = int(time.time() * 1000)
    rec = {"id": "x", "event_id": "api-limits", "attendee_id": "a", "type": "chat", "ts": now}
    status, _, body = gateway.post_api("/v1/interactions", [rec] * 101)
    assert (status, body["reason"]) == (413, "too_many_records")
    status, _, body = gateway.post_api("/v1/interactions", b"\n".join([orjson.dumps(rec)] * 101))
    assert (status, body["reason"]) == (413, "too_many_records")
    status, _, body = gateway.post_api("/v1/interactions", b"x" * 262_145)  # declared length over the cap
    assert (status, body["reason"]) == (413, "too_large")
    # the same, chunked (no declared length): refused as soon as the cap is passed
    status, body = raw_request(gateway.port, b"POST /v1/interactions HTTP/1.1\r\nHost: x\r\n"
                               b"Authorization: Bearer " + API_KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                               + b"".join(b"10000\r\n" + b"y" * 65536 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n")
    assert status == 413 and orjson.loads(body)["reason"] == "too_large"
    status, _, body = gateway.post_api("/v1/interactions", [{**rec, "pad": "p" * 70_000}])
    assert status == 200 and body["results"][0]["reason"] == "too_large"
    for blank in (b"", b"  \n\n"):  # no records at all: refused
        status, _, body = gateway.post_api("/v1/interactions", blank)
        assert (status, body["reason"]) == (400, "empty_body"), body
    status, _, body = gateway.post_api("/v1/interactions", b"[]")  # an array of none: an empty answer
    assert (status, body) == (200, {"accepted": 0, "rejected": 0, "results": []})


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the body was all sent: the answer is already there
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < content_length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def content_length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_hostile_bodies_never_crash_or_stall_the_gateway(gateway):
    rng = os.urandom
    cases = [rng(5000), b"[" * 100_000, b"[" + b"{}," * 50_000 + b"{}]", b'{"a":' * 2000 + b"1" + b"}" * 2000,
             b"\x00" * 1000, "[\"\ud800\"]".encode("utf-8", "surrogatepass"), b'[{"id": 1e400}]']
    for body in cases:
        status, _, answer = gateway.post_api("/v1/interactions", body)
        assert status in (200, 400, 413), (status, answer)
        assert isinstance(answer, dict) and ("results" in answer or answer["reason"]), answer
        if status == 200:
            assert answer["accepted"] == 0
    # a slow sender is cut off at gateway_body_timeout_s, and meanwhile others are served
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as slow:
        slow.sendall(b"POST /v1/interactions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
                     + b"\r\nContent-Length: 1000\r\n\r\n[")
        assert gateway.request("GET", "/health")[0] == 200
        answer = slow.recv(65536)
    assert b" 408 " in answer.split(b"\r\n")[0] and b"slow_body" in answer
    assert gateway.request("GET", "/health")[0] == 200
    m = parse_metrics(gateway.metrics_text())
    assert m.get(("livepulse_gateway_records_total", (("kind", "interaction"),)), 0) == 0
    assert m[("livepulse_gateway_rejects_total", (("reason", "slow_body"),))] == 1


def test_memory_stays_bounded_under_a_flood_of_large_requests(gateway):
    """200 concurrent near-cap bodies, twice: the second round must not grow the gateway's memory much further
    (what one round needs is bounded by the body cap times the concurrent requests, and freed afterwards)."""
    import aiohttp

    now = int(time.time() * 1000)
    line = orjson.dumps({"id": "f", "event_id": "api-flood", "attendee_id": "a", "type": "chat", "ts": now,
                         "pad": "z" * 2400})
    body = b"\n".join([line] * 100)  # ~250 KB, 100 records

    async def flood() -> list[int]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as session:
            async def one(i: int) -> int:
                async with session.post(f"{gateway.url}/v1/interactions", data=body) as r:
                    await r.read()
                    return r.status
            return await asyncio.gather(*(one(i) for i in range(200)))

    before = gateway.rss_bytes()
    first = asyncio.run(flood())
    after_first = gateway.rss_bytes()
    second = asyncio.run(flood())
    after_second = gateway.rss_bytes()
    assert set(first) | set(second) <= {200, 503}, (set(first), set(second))
    assert 200 in first + second
    assert after_second - after_first < 64 * 2**20, (before, after_first, after_second)
    assert after_second - before < 400 * 2**20, (before, after_first, after_second)
    assert gateway.request("GET", "/health")[0] == 200


def test_a_connection_slow_to_send_its_headers_is_closed(broker, tmp_path):
    gw = GatewayProcess(Pipeline(broker, tmp_path, partitions=1), header_timeout_s="1").start()
    try:
        gw.wait_ready()
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as slow, \
                socket.create_connection(("127.0.0.1", gw.port), timeout=10) as silent:
            slow.sendall(b"POST /v1/interactions HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
            assert gw.request("GET", "/health")[0] == 200  # meanwhile others are served
            assert slow.recv(1024) == b"" and silent.recv(1024) == b"", "closed by the gateway"
        # a connection that sent its headers in time keeps its body timeout instead (test_hostile_bodies...)
        status, _, _ = gw.request("GET", "/health")
        assert status == 200
    finally:
        gw.stop()
