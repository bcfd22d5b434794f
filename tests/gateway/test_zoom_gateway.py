"""Zoom webhooks through the gateway, the embedded broker and a real worker: a simulated webinar delivered as
signed webhooks -- retried, reordered, with forged and replayed requests among them, the secret being rotated --
gives the same summary and leads as the same webinar sent as interactions; a URL validation is answered; events
LivePulse does not map are answered 200 and counted."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import orjson
import pytest

from streams.gateway.zoom import map_delivery, signature
from streams.simulate.post import post_deliveries
from streams.simulate.scenario import ScenarioConfig, generate
from streams.simulate.zoom import zoom_webinar
from tests.gateway.harness import GatewayProcess
from tests.integration.harness import Pipeline, WorkerProcess, consume, decoded, parse_metrics, produce, wait_until
from tests.reference import assert_same

pytestmark = pytest.mark.integration

OLD_SECRET, NEW_SECRET = "zoom-secret-old", "zoom-secret-new"  # a rotation in progress: both verify
ID_KEY = "zoom-id-key-for-the-tests"
LATENESS_S = 30


def processed(worker: WorkerProcess) -> float:
    return sum(v for (name, _), v in worker.metrics().items() if name == "livepulse_records_processed_total")


def outputs(pipe: Pipeline) -> tuple[list[dict], list[dict]]:
    s = pipe.settings
    topics = [s.topic_summary, s.topic_leads]
    got = asyncio.run(consume(pipe.broker, topics, until=lambda r: len(r[s.topic_summary]) >= 1, timeout=90))
    time.sleep(1.0)  # the leads follow their summary: read once more
    got = asyncio.run(consume(pipe.broker, topics, until=lambda r: len(r[s.topic_summary]) >= 1))
    return decoded(got[s.topic_summary]), decoded(got[s.topic_leads])


def signed(body: bytes, secret: str, ts: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    return {"Content-Type": "application/json", "x-zm-request-timestamp": stamp,
            "x-zm-signature": signature(body, stamp, secret)}


def test_zoom_webhooks_through_the_gateway_give_the_summary_and_leads_of_the_same_webinar(broker, tmp_path):
    cfg = ScenarioConfig(seed=11, registrants=60, duration_s=600)
    end = cfg.start + cfg.duration_s * 1000
    records = [r for r in generate(cfg) if r.topic == "events" or r.ts <= end]
    webinar = zoom_webinar(records, secret=OLD_SECRET, seed=11, retry_rate=0.2, reorder_rate=0.3, max_delay_s=20)
    [event_id] = webinar.event_ids.values()
    sentinel = orjson.dumps({"id": "sentinel", "event_id": event_id, "attendee_id": "sentinel", "type": "heartbeat",
                             "ts": end + (LATENESS_S + 1) * 1000})  # the event's clock past ended + lateness

    def is_ended(body: bytes) -> bool:
        return orjson.loads(body)["event"].endswith(".ended")

    # --- the same webinar sent as interactions, straight to the topics
    direct = Pipeline(broker, tmp_path / "direct", partitions=2)
    zoom = Pipeline(broker, tmp_path / "zoom", partitions=2)
    (tmp_path / "direct").mkdir()
    (tmp_path / "zoom").mkdir()
    worker_direct, worker_zoom = WorkerProcess(direct, "direct").start(), WorkerProcess(zoom, "zoom").start()
    gw = GatewayProcess(zoom, zoom_secret_tokens=orjson.dumps([NEW_SECRET, OLD_SECRET]).decode(),
                        id_hash_key=ID_KEY).start()
    try:
        worker_direct.wait_ready()
        worker_zoom.wait_ready()
        gw.wait_ready()
        names = {"interactions": direct.settings.topic_interactions, "events": direct.settings.topic_events}
        # The worker reads its topics side by side, in no fixed order between them; so that both paths see the
        # same order, each sends in steps, waiting for the worker between them: the start (it declares the
        # event's join_leave presence), everything else, the end, then the sentinel.
        steps = [[r for r in webinar.reference if r.topic == "events" and b'"started"' in r.value],
                 [r for r in webinar.reference if r.topic == "interactions"],
                 [r for r in webinar.reference if r.topic == "events" and b'"ended"' in r.value]]
        assert sum(map(len, steps)) == len(webinar.reference)
        sent = 0
        for step in steps:
            asyncio.run(produce(broker, [(names[r.topic], r.key, r.value) for r in step]))
            sent += len(step)
            wait_until(lambda n=sent: processed(worker_direct) >= n, timeout=60, what="the direct records processed")
        asyncio.run(produce(broker, [(names["interactions"], event_id.encode(), sentinel)]))

        # --- through the gateway: a URL validation, hostile requests, then the deliveries (ended last)
        body = orjson.dumps({"event": "endpoint.url_validation", "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"},
                             "event_ts": int(time.time() * 1000)})
        status, _, answer = gw.request("POST", "/webhooks/zoom", body, signed(body, OLD_SECRET))
        assert status == 200 and answer == {
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": hmac.new(NEW_SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()}
        joins = [d for d in webinar.deliveries if b"participant_joined" in d.body]
        chats = [d for d in webinar.deliveries if b"chat_message_sent" in d.body]
        intruder = joins[0].body.replace(b"@example.com", b"@intruder.example").replace(b'"id":"', b'"id":"x', 1)
        replayed = chats[0].body.replace(b'"message_id":"', b'"message_id":"replayed-', 1)
        for body, headers, reason in [
                (intruder, signed(intruder, "a-forged-secret"), "bad_signature"),
                (intruder, {**signed(intruder, OLD_SECRET), "x-zm-signature": signature(
                    intruder.replace(b"intruder", b"example"), str(int(time.time())), OLD_SECRET)}, "bad_signature"),
                (replayed, signed(replayed, OLD_SECRET, ts=int(time.time()) - 600), "stale_timestamp"),
                (intruder, {"Content-Type": "application/json"}, "missing_signature")]:
            status, _, answer = gw.request("POST", "/webhooks/zoom", body, headers)
            assert (status, answer["reason"]) == (401, reason), answer
        unmapped = orjson.dumps({"event": "webinar.sharing_started", "event_ts": int(time.time() * 1000),
                                 "payload": {"object": {"uuid": "x", "id": 1}}})
        status, _, answer = gw.request("POST", "/webhooks/zoom", unmapped, signed(unmapped, OLD_SECRET))
        assert status == 200 and answer["status"] == "ignored"

        starts = [d for d in webinar.deliveries if orjson.loads(d.body)["event"].endswith(".started")]
        ends = [d for d in webinar.deliveries if is_ended(d.body)]
        middle = [d for d in webinar.deliveries if d not in starts and d not in ends]
        for step in (starts, middle, ends):
            statuses = asyncio.run(post_deliveries(step, f"{gw.url}/webhooks/zoom", OLD_SECRET, progress=None))
            assert statuses == {200: len(step)}
            m = parse_metrics(gw.metrics_text())
            produced = sum(v for (name, _), v in m.items() if name == "livepulse_gateway_records_total")
            wait_until(lambda n=produced: processed(worker_zoom) >= n, timeout=60, what="the Zoom records processed")
        status, _, _ = gw.post_api("/v1/interactions", sentinel)
        assert status == 200

        (summary_direct,), leads_direct = outputs(direct)
        (summary_zoom,), leads_zoom = outputs(zoom)
        assert summary_zoom["event_id"] == event_id
        assert_same(summary_zoom, summary_direct)
        assert summary_zoom["registrations"] == 60 and summary_zoom["unique_attendees"] > 20
        # the leads, with each simulated attendee's id turned into the gateway's keyed hash of their e-mail
        zoom_id = {}
        for d in webinar.deliveries:
            for r in map_delivery(orjson.loads(d.body), id_key=ID_KEY.encode()).interactions:
                zoom_id[d.attendee] = r["attendee_id"]
        zoom_id["sentinel"] = "sentinel"
        expected = sorted(({**x, "attendee_id": zoom_id[x["attendee_id"]]} for x in leads_direct),
                          key=lambda x: x["attendee_id"])
        assert_same(sorted(leads_zoom, key=lambda x: x["attendee_id"]), expected)
        assert not any("@" in orjson.dumps(x).decode() for x in leads_zoom), "no e-mail in a topic"

        m = parse_metrics(gw.metrics_text())
        assert m[("livepulse_gateway_rejects_total", (("reason", "bad_signature"),))] == 2
        assert m[("livepulse_gateway_rejects_total", (("reason", "stale_timestamp"),))] == 1
        assert m[("livepulse_gateway_requests_total", (("route", "/webhooks/zoom"), ("status", "401")))] == 4
        assert m[("livepulse_gateway_zoom_events_total", (("event", "webinar.sharing_started"),
                                                          ("outcome", "unmapped")))] == 1
        assert m[("livepulse_gateway_zoom_events_total", (("event", "endpoint.url_validation"),
                                                          ("outcome", "answered")))] == 1
        retried = len(webinar.deliveries) - len({d.body for d in webinar.deliveries})
        joined = m[("livepulse_gateway_zoom_events_total", (("event", "webinar.participant_joined"),
                                                            ("outcome", "mapped")))]
        assert joined == len(joins) and retried > 5
        # every retried delivery about a person was a duplicate the worker dropped (a retried lifecycle delivery
        # is an event record, not an interaction)
        about_people = [d for d in webinar.deliveries if d.attendee is not None]
        dropped = worker_zoom.metrics()[("livepulse_duplicates_dropped_total", ())]
        assert dropped == len(about_people) - len({d.body for d in about_people}) > 0
        assert worker_direct.metrics()[("livepulse_duplicates_dropped_total", ())] == 0
    finally:
        gw.stop()
        worker_zoom.stop()
        worker_direct.stop()
