"""/v1/collect, the browser beacon's endpoint, against the real broker: CORS, write keys, rate limits, server-side
ts, ids that make a resent beacon a duplicate."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from tests.gateway.harness import WRITE_KEY, GatewayProcess
from tests.integration.harness import Pipeline, consume, parse_metrics

pytestmark = pytest.mark.integration

PAGE = "https://webinars.example.com"


@pytest.fixture
def gateway(broker, tmp_path):
    pipe = Pipeline(broker, tmp_path, partitions=2)
    gw = GatewayProcess(pipe, cors_origins=orjson.dumps([PAGE]).decode(), clock_skew_s="5",
                        burst_per_client="8", rate_per_client="0.01", burst_per_attendee="12",
                        rate_per_attendee="0.01").start()
    try:
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()


def beacon(records: list[dict], attendee: str = "u-1", key: str = WRITE_KEY, event: str = "beacon-ev") -> bytes:
    return orjson.dumps({"k": key, "e": event, "a": attendee, "c": "web", "r": records})


def post(gw: GatewayProcess, body: bytes, origin: str | None = PAGE):
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    if origin:
        headers["Origin"] = origin
    return gw.request("POST", "/v1/collect", body, headers)


def test_cors_preflight_and_origins(gateway):
    status, headers, _ = gateway.request("OPTIONS", "/v1/collect", headers={
        "Origin": PAGE, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert status == 204
    assert headers["access-control-allow-origin"] == PAGE and "POST" in headers["access-control-allow-methods"]
    assert "content-type" in headers["access-control-allow-headers"].lower()
    status, headers, body = gateway.request("OPTIONS", "/v1/collect", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert (status, body["reason"]) == (403, "origin_not_allowed")
    assert "access-control-allow-origin" not in headers
    status, headers, body = post(gateway, beacon([{"i": "x.1", "t": "join"}]), origin="https://evil.example")
    assert (status, body["reason"]) == (403, "origin_not_allowed") and "access-control-allow-origin" not in headers
    status, headers, body = post(gateway, beacon([{"i": "x.1", "t": "join"}]))
    assert status == 200 and body["accepted"] == 1, body
    assert headers["access-control-allow-origin"] == PAGE and headers["vary"] == "Origin"
    # refusals to an allowed origin carry CORS headers too, so the page can read why
    status, headers, body = post(gateway, beacon([{"i": "x.2", "t": "join"}], key="nope"))
    assert (status, body["reason"]) == (401, "bad_write_key") and headers["access-control-allow-origin"] == PAGE
    status, _, body = post(gateway, orjson.dumps({"e": "beacon-ev", "a": "u", "r": [{"t": "join"}]}))
    assert (status, body["reason"]) == (401, "missing_write_key")
    status, headers, script = gateway.request("GET", "/v1/livepulse.js")
    assert status == 200 and headers["content-type"].startswith("application/javascript")
    assert b"sendBeacon" in script and b"data-livepulse-cta" in script


def test_ts_is_the_gateways_and_a_resent_beacon_makes_the_same_interactions(gateway):
    now = int(time.time() * 1000)
    records = [{"i": "pv.0", "t": "join", "ts": now - 3_600_000},  # an hour slow: clamped to now - 5 s
               {"i": "pv.1", "t": "heartbeat", "ts": now + 3_600_000},  # an hour fast: now
               {"i": "pv.2", "t": "cta_click", "cta_id": "demo"},  # no ts: now
               {"i": "pv.3", "t": "registration"},  # not a beacon's to record
               {"i": "pv.4", "t": "poll_vote"},  # no poll_id: the schema's rule
               "junk"]
    body = beacon(records, attendee="u-ts")
    status, _, first = post(gateway, body)
    status2, _, again = post(gateway, body)  # the page resent it (a retry after a network error)
    after = int(time.time() * 1000)
    assert status == status2 == 200 and first == again
    assert [(r["status"], r.get("reason")) for r in first["results"]] == [
        ("accepted", None), ("accepted", None), ("accepted", None), ("rejected", "schema_violation"),
        ("rejected", "schema_violation"), ("rejected", "not_an_object")]
    topic = gateway.pipeline.settings.topic_interactions
    got = asyncio.run(consume(gateway.pipeline.broker, [topic], until=lambda r: len(r[topic]) >= 6, timeout=30))
    values = [orjson.loads(v) for _, v in got[topic]]
    assert {k for k, _ in got[topic]} == {b"beacon-ev"}
    by_type = {}
    for v in values:
        by_type.setdefault(v["type"], []).append(v)
    assert sorted(by_type) == ["cta_click", "heartbeat", "join"]
    for copies in by_type.values():
        assert len(copies) == 2 and copies[0]["id"] == copies[1]["id"], "a resent beacon's records are duplicates"
        assert {**copies[0], "ts": 0} == {**copies[1], "ts": 0}  # (ts is the gateway's clock at each arrival)
    join, heartbeat, click = by_type["join"][0], by_type["heartbeat"][0], by_type["cta_click"][0]
    assert now - 5000 <= join["ts"] <= after - 5000 + 50
    assert now <= heartbeat["ts"] <= after and now <= click["ts"] <= after
    assert click["cta_id"] == "demo" and join["attendee_id"] == "u-ts" and join["client"] == "web"
    assert len({join["id"], heartbeat["id"], click["id"]}) == 3
    # another attendee's record with the same page id is another interaction
    post(gateway, beacon([{"i": "pv.0", "t": "join"}], attendee="u-other"))
    got = asyncio.run(consume(gateway.pipeline.broker, [topic], until=lambda r: len(r[topic]) >= 7, timeout=30))
    assert orjson.loads(got[topic][-1][1])["id"] != join["id"]


def test_rate_limits_per_client_and_per_attendee(gateway):
    # per attendee: 12 records of burst
    status, _, _ = post(gateway, beacon([{"i": f"a.{n}", "t": "heartbeat"} for n in range(11)], attendee="u-rl"))
    assert status == 200
    status, headers, body = post(gateway, beacon([{"i": "a.5", "t": "heartbeat"}, {"i": "a.6", "t": "chat"}],
                                                 attendee="u-rl"))
    assert (status, body["reason"]) == (429, "rate_limited") and int(headers["retry-after"]) >= 1
    # other attendees still get through, until the client address runs out (8 requests of burst, 2 used)
    statuses = [post(gateway, beacon([{"i": f"b.{n}", "t": "heartbeat"}], attendee=f"u-{n}"))[0] for n in range(9)]
    assert statuses == [200] * 6 + [429] * 3, statuses
    m = parse_metrics(gateway.metrics_text())
    assert m[("livepulse_gateway_rejects_total", (("reason", "rate_limited"),))] == 4
    assert m[("livepulse_gateway_requests_total", (("route", "/v1/collect"), ("status", "429")))] == 4


def test_beacon_size_and_count_limits(gateway):
    status, _, body = post(gateway, beacon([{"i": f"c.{n}", "t": "heartbeat"} for n in range(21)]))
    assert (status, body["reason"]) == (413, "too_many_records")
    status, _, body = post(gateway, beacon([{"i": "d.1", "t": "chat", "pad": "x" * 9000}]))
    assert (status, body["reason"]) == (413, "too_large")
    for bad, reason in [(b"\xff\xfe", "invalid_json"), (b"[1]", "not_an_object"),
                        (orjson.dumps({"k": WRITE_KEY, "e": "x", "a": "u", "r": []}), "empty_body"),
                        (orjson.dumps({"k": WRITE_KEY, "e": 5, "a": "u", "r": [{}]}), "schema_violation")]:
        status, _, body = post(gateway, bad)
        assert (status, body["reason"]) == (400, reason), body
