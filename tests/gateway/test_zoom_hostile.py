"""Hostile requests at /webhooks/zoom against a real gateway and broker: whatever is signed or not, nothing
malformed is produced, every refusal has its reason, and the gateway keeps answering."""

from __future__ import annotations

import asyncio
import os
import time

import orjson
import pytest

from streams.gateway.zoom import signature
from tests.gateway.harness import GatewayProcess
from tests.integration.harness import Pipeline, consume, parse_metrics

pytestmark = pytest.mark.integration

SECRET = "hostile-secret"


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    ts = str(int(time.time()))
    return {"Content-Type": "application/json", "x-zm-request-timestamp": ts,
            "x-zm-signature": signature(body, ts, secret)}


def test_hostile_zoom_requests(broker, tmp_path):
    pipe = Pipeline(broker, tmp_path, partitions=1)
    gw = GatewayProcess(pipe, zoom_secret_tokens=orjson.dumps([SECRET]).decode(), id_hash_key="k" * 32,
                        max_body_bytes="65536").start()
    try:
        gw.wait_ready()
        joined = orjson.dumps({"event": "webinar.participant_joined", "event_ts": int(time.time() * 1000),
                               "payload": {"object": {"id": 1, "uuid": "u==", "participant": {
                                   "email": "a@example.com", "join_time": "2026-12-07T10:00:00Z"}}}})
        cases = [  # (body, headers, status, reason or answer status)
            (os.urandom(3000), signed(os.urandom(8)), 401, "bad_signature"),
            (b"[" * 50_000, signed(b"[" * 50_000), 400, "bad_json"),
            (b"x" * 70_000, signed(b"x" * 70_000), 413, "too_large"),
            (joined, {**signed(joined), "x-zm-request-timestamp": "soon"}, 401, "bad_timestamp"),
            (joined, {**signed(joined), "x-zm-request-timestamp": "1" * 40}, 401, "bad_timestamp"),
            (joined, {"x-zm-signature": "v0=00"}, 401, "missing_timestamp"),
            (b'{"event": "endpoint.url_validation", "payload": {}}',
             signed(b'{"event": "endpoint.url_validation", "payload": {}}'), 400, "missing_field"),
            (b'{"event": 7}', signed(b'{"event": 7}'), 200, "rejected"),
            (b'{"event": "webinar.participant_joined", "payload": {"object": {"uuid": "u=="}}}',
             signed(b'{"event": "webinar.participant_joined", "payload": {"object": {"uuid": "u=="}}}'), 200,
             "rejected"),
            (b'["not", "an", "object"]', signed(b'["not", "an", "object"]'), 200, "rejected"),
            (b'{"event": "' + b"x" * 5000 + b'"}', signed(b'{"event": "' + b"x" * 5000 + b'"}'), 200, "ignored"),
        ]
        for body, headers, status, expected in cases:
            got, _, answer = gw.request("POST", "/webhooks/zoom", body, headers)
            assert got == status, (expected, answer)
            assert answer.get("reason", answer.get("status")) == expected or answer.get("status") == expected, answer
        got, _, answer = gw.request("POST", "/webhooks/zoom", joined, signed(joined))
        assert (got, answer["status"]) == (200, "accepted")
        topic = pipe.settings.topic_interactions
        records = asyncio.run(consume(broker, [topic], until=lambda r: len(r[topic]) >= 1, timeout=30))[topic]
        assert len(records) == 1, "only the one good delivery was produced"
        assert b"example.com" not in records[0][1], "no e-mail in the topic"
        m = parse_metrics(gw.metrics_text())
        # an unknown event name is folded into "other": the label stays bounded
        assert m[("livepulse_gateway_zoom_events_total", (("event", "other"), ("outcome", "unmapped")))] == 1
        assert gw.request("GET", "/health")[0] == 200
    finally:
        gw.stop()
