"""`POST /webhooks/zoom`: the HTTP side of Zoom webhooks; the signature rules and the mapping are in zoom.py.

Order matters: the signature is checked over the raw bytes before anything is parsed (a forged or replayed
request costs one HMAC per configured secret and changes nothing); `endpoint.url_validation` is answered with the
first secret token; an event LivePulse does not map is answered 200 and counted by name (Zoom disables endpoints
that keep failing); a mapped one is answered after Kafka acknowledged its records, within gateway_ack_timeout_s.
A verified delivery that cannot be mapped (a field missing or malformed) is answered 200 too -- Zoom would only
retry the same bytes -- and counted by reason and logged without its content (it holds personal data).
"""

from __future__ import annotations

import logging
import time

import orjson
from aiohttp import web

from streams.gateway.errors import Refused, json_response
from streams.gateway.http import METRICS, SETTINGS, produce, read_body
from streams.gateway.zoom import ZoomRejected, map_delivery, url_validation_answer, verify
from streams.ingest.decode import Rejection, decode_event, decode_interaction
from streams.settings import Settings

log = logging.getLogger("livepulse.gateway")


class ZoomRoute:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secrets = [token.get_secret_value() for token in settings.gateway_zoom_secret_tokens
                        if token.get_secret_value()]
        key = settings.gateway_id_hash_key.get_secret_value()
        if self.secrets and len(key) < 16:
            raise ValueError("LIVEPULSE_GATEWAY_ID_HASH_KEY must be set (16 characters or more) when Zoom secret "
                             "tokens are: attendee ids are keyed hashes of Zoom's e-mail addresses")
        self.id_key = key.encode()

    def records(self, raw: bytes, signature: str | None, timestamp: str | None,
                now_s: float) -> tuple[str, object]:
        """("answer", body) for a URL validation, ("ignored", name) for an unmapped event, ("rejected", ZoomRejected)
        for a verified delivery that does not map, ("produce", (name, [(topic, key, value)])) otherwise. A request
        that fails verification raises Refused(401)."""
        s = self.settings
        try:
            verify(raw, signature, timestamp, self.secrets, now_s=now_s, tolerance_s=s.gateway_zoom_tolerance_s)
        except ZoomRejected as exc:
            raise Refused(401, exc.reason, exc.detail) from None
        try:
            delivery = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Refused(400, "bad_json", "the body is not JSON") from None
        if isinstance(delivery, dict) and delivery.get("event") == "endpoint.url_validation":
            payload = delivery.get("payload")
            plain = payload.get("plainToken") if isinstance(payload, dict) else None
            if not isinstance(plain, str) or not plain or len(plain) > 1024:
                raise Refused(400, "missing_field", "$.payload.plainToken: missing or not a string")
            return "answer", url_validation_answer(plain, self.secrets[0])
        try:
            mapped = map_delivery(delivery, id_key=self.id_key)
        except ZoomRejected as exc:
            return "rejected", exc
        if not mapped.mapped:
            return "ignored", mapped.event_name
        now_ms = int(now_s * 1000)
        records = []
        for topic, decode, items in ((s.topic_events, decode_event, mapped.events),
                                     (s.topic_interactions, decode_interaction, mapped.interactions)):
            for item in items:
                value = orjson.dumps(item)
                checked = decode(value, now_ms=now_ms, max_bytes=s.max_record_bytes,
                                 max_future_skew_ms=round(s.max_future_skew_s * 1000))
                if isinstance(checked, Rejection):  # the mapping made a record its topic refuses
                    return "rejected", ZoomRejected(checked.reason, checked.error)
                records.append((topic, str(item["event_id"]).encode(), value))
        return "produce", (mapped.event_name, records, len(mapped.events))


ZOOM = web.AppKey("zoom", ZoomRoute)


async def zoom_webhook(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    metrics = request.app[METRICS]
    route = request.app[ZOOM]
    raw = await read_body(request, s.gateway_max_body_bytes, s.gateway_body_timeout_s)
    outcome, detail = route.records(raw, request.headers.get("x-zm-signature"),
                                    request.headers.get("x-zm-request-timestamp"), time.time())
    if outcome == "answer":
        metrics.zoom_event("endpoint.url_validation", "answered")
        return json_response(detail)
    if outcome == "ignored":
        metrics.zoom_event(str(detail), "unmapped")
        return json_response({"status": "ignored", "event": detail})
    if outcome == "rejected":
        assert isinstance(detail, ZoomRejected)
        metrics.rejects.labels(detail.reason).inc()
        name = orjson.loads(raw).get("event") if raw[:1] == b"{" else None
        metrics.zoom_event(name if isinstance(name, str) else "other", "rejected")
        log.warning("gateway: a verified Zoom delivery was not mapped: %s", detail.reason)
        return json_response({"status": "rejected", "reason": detail.reason, "error": detail.detail})
    name, records, n_events = detail  # type: ignore[misc]
    await produce(request, records)
    metrics.zoom_event(name, "mapped")
    metrics.records.labels("event").inc(n_events)
    metrics.records.labels("interaction").inc(len(records) - n_events)
    return json_response({"status": "accepted", "events": n_events, "interactions": len(records) - n_events})
