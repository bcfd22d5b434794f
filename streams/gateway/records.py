"""The ingest API's body: a JSON array or NDJSON of records, each validated as the worker validates its input.

Validation is streams.ingest.decode itself, so a record the API accepts is one the worker accepts, and a refused
record gets the DLQ's reason code. What is produced are the record's own bytes (an NDJSON line as sent, an array
element as orjson writes it): the worker decodes them again, exactly as if they had been produced directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from streams.gateway.errors import Refused
from streams.ingest.decode import Rejection, decode_event, decode_interaction, decode_opportunity

DECODERS: dict[str, Callable[..., dict | Rejection]] = {
    "interaction": decode_interaction, "event": decode_event, "opportunity": decode_opportunity}


@dataclass(frozen=True, slots=True)
class Checked:
    """One record of a request: its bytes and key when valid, else the rejection."""

    index: int
    value: bytes
    key: bytes | None = None
    rejection: Rejection | None = None


def split_body(body: bytes, max_records: int) -> list[bytes]:
    """The records of a body: the elements of a JSON array, else the non-blank lines (NDJSON)."""
    stripped = body.lstrip(b" \t\r\n\xef\xbb\xbf")
    if not stripped:
        raise Refused(400, "empty_body", "the request has no records")
    if stripped[:1] == b"[":
        try:
            items = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                raise Refused(400, "invalid_utf8", "the body is not UTF-8") from None
            raise Refused(400, "invalid_json", f"the body is not a JSON array: {exc}") from None
        if not isinstance(items, list):
            raise Refused(400, "invalid_json", "the body is not a JSON array")
        if len(items) > max_records:
            raise Refused(413, "too_many_records", f"{len(items)} records, more than the {max_records} allowed")
        return [orjson.dumps(item) for item in items]
    lines = [line for line in body.split(b"\n") if line.strip()]
    if len(lines) > max_records:
        raise Refused(413, "too_many_records", f"more than the {max_records} records allowed")
    return lines


def check(kind: str, values: list[bytes], *, now_ms: int, max_bytes: int, max_future_skew_ms: int) -> list[Checked]:
    decode = DECODERS[kind]
    checked = []
    for index, value in enumerate(values):
        value = value.strip()
        result = decode(value, now_ms=now_ms, max_bytes=max_bytes, max_future_skew_ms=max_future_skew_ms)
        if isinstance(result, Rejection):
            checked.append(Checked(index, value, rejection=result))
        else:
            checked.append(Checked(index, value, key=record_key(kind, result)))
    return checked


def record_key(kind: str, record: dict) -> bytes:
    """The key of a record in its topic: event_id, or for CRM opportunities the organiser (README "Topics")."""
    if kind == "opportunity":
        return str(record.get("organizer_id") or "default").encode()
    return str(record["event_id"]).encode()
