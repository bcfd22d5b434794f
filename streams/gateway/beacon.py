"""`POST /v1/collect`: interactions from the browser beacon (static/livepulse.js), and the CORS rules around it.

A browser is not trusted: its page is public, so its write key only says which organiser's page it claims to be;
its clock may be wrong, so `ts` is the gateway's (a client ts is kept only within `gateway_clock_skew_s` before
now); its rate is limited per client address and per attendee. Each record's id is a hash of the organiser, the
event, the attendee and the id the page gave it: a beacon sent twice (a retry, a resend after a network error)
makes the same interactions, which the worker de-duplicates.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import orjson

from streams.gateway.auth import WriteKeys
from streams.gateway.errors import Refused
from streams.gateway.ratelimit import TokenBuckets
from streams.ingest.decode import Rejection, decode_interaction
from streams.settings import Settings

# What a page may record. Registrations come from the registration system (the API or Zoom), not from a page.
BEACON_TYPES = frozenset({"join", "leave", "heartbeat", "chat", "question", "poll_vote", "reaction", "cta_click"})
MAX_CLIENT_ID = 128


@dataclass(frozen=True, slots=True)
class Collected:
    records: list[tuple[bytes, bytes]]  # (key, value) of every valid interaction
    results: list[dict]


class Cors:
    def __init__(self, origins: list[str]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o.rstrip("/") for o in origins if o != "*")

    def allowed(self, origin: str | None) -> bool:
        return origin is None or self.any or origin in self.origins

    def headers(self, origin: str | None) -> dict[str, str]:
        if origin is None or not self.allowed(origin):
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def preflight(self, origin: str | None) -> dict[str, str]:
        if origin is None or not self.allowed(origin):
            raise Refused(403, "origin_not_allowed", "this origin may not send beacons (gateway_cors_origins)")
        return {**self.headers(origin), "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600"}


class Collector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.write_keys = WriteKeys(settings.gateway_beacon_write_keys)
        self.per_client = TokenBuckets(settings.gateway_rate_per_client, settings.gateway_burst_per_client,
                                       settings.gateway_rate_limit_keys)
        self.per_attendee = TokenBuckets(settings.gateway_rate_per_attendee, settings.gateway_burst_per_attendee,
                                         settings.gateway_rate_limit_keys)

    def admit_client(self, address: str, now: float | None = None) -> None:
        if not self.per_client.allow(address, time.monotonic() if now is None else now):
            raise Refused(429, "rate_limited", "too many beacons from this address",
                          {"Retry-After": str(max(1, round(1 / self.settings.gateway_rate_per_client)))})

    def collect(self, body: bytes, *, now_ms: int, now: float | None = None) -> Collected:
        s = self.settings
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Refused(400, "invalid_json", "the beacon is not JSON") from None
        if not isinstance(payload, dict):
            raise Refused(400, "not_an_object", "the beacon is not a JSON object")
        organizer = self.write_keys.organizer(payload.get("k"))
        event_id, attendee_id, items = payload.get("e"), payload.get("a"), payload.get("r")
        if not isinstance(event_id, str) or not isinstance(attendee_id, str):
            raise Refused(400, "schema_violation", "the beacon needs an event id (e) and an attendee id (a)")
        if not isinstance(items, list) or not items:
            raise Refused(400, "empty_body", "the beacon has no records (r)")
        if len(items) > s.gateway_collect_max_records:
            raise Refused(413, "too_many_records", f"more than {s.gateway_collect_max_records} records in a beacon")
        if not self.per_attendee.allow((event_id, attendee_id), time.monotonic() if now is None else now,
                                       cost=len(items)):
            raise Refused(429, "rate_limited", "too many beacons for this attendee",
                          {"Retry-After": str(max(1, round(len(items) / s.gateway_rate_per_attendee)))})
        client = payload.get("c") if isinstance(payload.get("c"), str) else "web"
        skew_ms = round(s.gateway_clock_skew_s * 1000)
        records, results = [], []
        for index, item in enumerate(items):
            rejection, record = self._interaction(item, organizer, event_id, attendee_id, client, now_ms, skew_ms)
            if rejection is None:
                value = orjson.dumps(record)
                decoded = decode_interaction(value, now_ms=now_ms, max_bytes=s.max_record_bytes,
                                             max_future_skew_ms=round(s.max_future_skew_s * 1000))
                if isinstance(decoded, Rejection):
                    rejection = decoded
                else:
                    records.append((event_id.encode(), value))
            if rejection is None:
                results.append({"index": index, "status": "accepted"})
            else:
                results.append({"index": index, "status": "rejected", "reason": rejection.reason,
                                "error": rejection.error})
        return Collected(records, results)

    @staticmethod
    def _interaction(item: object, organizer: str, event_id: str, attendee_id: str, client: str, now_ms: int,
                     skew_ms: int) -> tuple[Rejection | None, dict]:
        if not isinstance(item, dict):
            return Rejection("not_an_object", "a beacon record is not a JSON object"), {}
        kind = item.get("t")
        if kind not in BEACON_TYPES:
            return Rejection("schema_violation", f"$.t: a beacon records one of {', '.join(sorted(BEACON_TYPES))}"), {}
        client_id = item.get("i")
        ts = item.get("ts")
        if type(ts) is int:
            ts = min(now_ms, max(now_ms - skew_ms, ts))  # the browser's clock, trusted within the skew only
        else:
            ts = now_ms
        if not isinstance(client_id, str) or not client_id or len(client_id) > MAX_CLIENT_ID:
            client_id = f"{kind}:{ts}:{item.get('poll_id')}:{item.get('cta_id')}"  # content-derived fallback
        identity = f"{organizer}\x00{event_id}\x00{attendee_id}\x00{client_id}"
        digest = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        record = {"id": f"b-{digest}", "event_id": event_id, "attendee_id": attendee_id, "type": kind, "ts": ts,
                  "client": client[:64]}
        for name in ("poll_id", "cta_id"):
            if name in item:
                record[name] = item[name]
        return None, record
