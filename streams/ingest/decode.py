"""Bytes of an input record -> a validated, normalised dict, or a Rejection saying why not.

The hot path: parse with orjson, one compiled-schema `is_valid` call; the explanation of a failure is computed
only for failures. `ts` (and an event's scheduled times) come out as integer epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from streams.ingest.contracts import first_error, json_path, validator

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: anything older is a broken clock, not a webinar
PLANNING_HORIZON_MS = 5 * 366 * 86_400_000  # scheduled times: up to about five years ahead
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
TIME_FIELDS = {"interaction": ("ts",), "event": ("ts", "scheduled_start", "scheduled_end"), "opportunity": ("ts",),
               "roi_fact": (), "erasure": ("ts",)}


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str  # machine-readable code (README "Dead-letter reason codes")
    error: str  # for a human: what is wrong and where


def decode_interaction(value: bytes | None, *, now_ms: int, max_bytes: int = 65536,
                       max_future_skew_ms: int = 86_400_000) -> dict | Rejection:
    return _decode("interaction", value, now_ms, max_bytes, max_future_skew_ms)


def decode_event(value: bytes | None, *, now_ms: int, max_bytes: int = 65536,
                 max_future_skew_ms: int = 86_400_000) -> dict | Rejection:
    return _decode("event", value, now_ms, max_bytes, max_future_skew_ms)


def decode_opportunity(value: bytes | None, *, now_ms: int, max_bytes: int = 65536,
                       max_future_skew_ms: int = 86_400_000) -> dict | Rejection:
    return _decode("opportunity", value, now_ms, max_bytes, max_future_skew_ms)


def decode_fact(value: bytes | None, *, now_ms: int, max_future_skew_ms: int = 86_400_000) -> dict | Rejection:
    """An internal ROI fact (topic roi.facts). LivePulse writes them, but so may anyone allowed to write the topic:
    each is checked against schemas/roi_fact.json, a forwarded opportunity against opportunity.json as well.
    No size limit: a chunk of leads may be larger than an input record may be."""
    fact = _decode("roi_fact", value, now_ms, None, max_future_skew_ms)
    if isinstance(fact, Rejection) or fact["fact"] != "opportunity":
        return fact
    return _decode("opportunity", value, now_ms, None, max_future_skew_ms)


def decode_erasure(value: bytes | None, *, now_ms: int, max_bytes: int = 65536,
                   max_future_skew_ms: int = 86_400_000) -> dict | Rejection:
    """An erasure request (schemas/erasure.json, docs/data-protection.md)."""
    return _decode("erasure", value, now_ms, max_bytes, max_future_skew_ms)


def _decode(kind: str, value: bytes | None, now_ms: int, max_bytes: int | None, skew_ms: int) -> dict | Rejection:
    if not value:
        return Rejection("empty_value", "the record has no value")
    if max_bytes is not None and len(value) > max_bytes:
        return Rejection("too_large", f"{len(value)} bytes, more than the {max_bytes} allowed")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError as bad:
            return Rejection("invalid_utf8", f"not UTF-8: {bad}")
        return Rejection("invalid_json", f"not JSON: {exc}")
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    if not (_VALIDATORS.get(kind) or _validator(kind)).is_valid(obj):
        return _explain(kind, obj)
    for name in TIME_FIELDS[kind]:
        # `ts` says when something happened: not (much) later than now. Planned times may lie years ahead.
        latest = now_ms + (skew_ms if name == "ts" else PLANNING_HORIZON_MS)
        ts = obj.get(name)
        if ts is None:
            continue
        if isinstance(ts, str):
            ts = obj[name] = _parse_rfc3339(ts)
            if ts is None:
                return Rejection("bad_timestamp", f"$.{name}: {obj[name]!r} is not an RFC 3339 time with offset")
        elif type(ts) is float:  # 1.7e12 is an integer to JSON Schema; keep the domain's ints exact
            ts = obj[name] = int(ts)
        if ts < MIN_TS_MS or ts > latest:
            return Rejection("timestamp_out_of_range",
                             f"$.{name}: {ts} ms is before 2000 or more than {(latest - now_ms) // 1000} s in the future")
    return obj


_VALIDATORS: dict[str, Any] = {}  # kind -> its compiled validator: a plain dict lookup per record


def _validator(kind: str) -> Any:
    v = _VALIDATORS[kind] = validator(kind)
    return v


def _explain(kind: str, obj: dict) -> Rejection:
    path, message = first_error(kind, obj) or ([], "invalid")
    if path == ["currency"]:  # not the enum's 183 codes: what is wrong, in one line
        message = f"{str(obj['currency'])[:16]!r} is not an ISO 4217 currency code"
    if path and path[0] in TIME_FIELDS[kind] and isinstance(obj.get(path[0]), str):
        return Rejection("bad_timestamp", f"$.{path[0]}: {obj[path[0]]!r} is not an RFC 3339 time with offset")
    return Rejection("schema_violation", f"{json_path(path)}: {message}"[:1000])


def _parse_rfc3339(text: str) -> int | None:
    """Epoch ms of an RFC 3339 time; None when it has no offset or does not parse."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return (parsed - EPOCH) // ONE_MS  # exact integer arithmetic (sub-millisecond digits are dropped)
