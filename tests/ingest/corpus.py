"""Malformed inputs, each with the dead-letter reason it must get; and valid oddities that must pass.

Shared by the unit tests (decode) and the integration test (through a real broker and worker)."""

from __future__ import annotations

import orjson

T = 1_768_489_200_000  # 2026-01-15T15:00:00Z


def rec(**overrides) -> dict:
    base = {"id": "i-1", "event_id": "corpus-ev", "attendee_id": "a-1", "type": "chat", "ts": T}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def enc(obj) -> bytes:
    return orjson.dumps(obj)


# (name, value bytes or None, expected reason)
CORPUS: list[tuple[str, bytes | None, str]] = [
    ("empty value", b"", "empty_value"),
    ("null value", None, "empty_value"),
    ("oversize", enc(rec(note="x" * 70_000)), "too_large"),
    ("not utf-8", b'{"id": "\xff\xfe", "type": "chat"}', "invalid_utf8"),
    ("latin-1 bytes", "{\"id\": \"caf\u00e9\"}".encode("latin-1"), "invalid_utf8"),
    ("invalid json", b'{"id": "i-1", "event_id": ', "invalid_json"),
    ("trailing garbage", enc(rec()) + b"}", "invalid_json"),
    ("NaN", b'{"id": "i-1", "event_id": "e", "attendee_id": "a", "type": "chat", "ts": NaN}', "invalid_json"),
    ("Infinity", b'{"id": "i-1", "event_id": "e", "attendee_id": "a", "type": "chat", "ts": Infinity}', "invalid_json"),
    ("deep nesting", b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid_json"),
    ("array", b"[1, 2, 3]", "not_an_object"),
    ("string", b'"chat"', "not_an_object"),
    ("null literal", b"null", "not_an_object"),
    ("number", b"42", "not_an_object"),
    ("missing id", enc(rec(id=...)), "schema_violation"),
    ("missing event_id", enc(rec(event_id=...)), "schema_violation"),
    ("missing attendee_id", enc(rec(attendee_id=...)), "schema_violation"),
    ("missing type", enc(rec(type=...)), "schema_violation"),
    ("missing ts", enc(rec(ts=...)), "schema_violation"),
    ("unknown type", enc(rec(type="dance")), "schema_violation"),
    ("id not a string", enc(rec(id=17)), "schema_violation"),
    ("empty id", enc(rec(id="")), "schema_violation"),
    ("ts as float", enc(rec(ts=1768489200000.5)), "schema_violation"),
    ("ts as bool", enc(rec(ts=True)), "schema_violation"),
    ("key_account as string", enc(rec(key_account="yes")), "schema_violation"),
    ("poll_vote without poll_id", enc(rec(type="poll_vote")), "schema_violation"),
    ("cta_click without cta_id", enc(rec(type="cta_click")), "schema_violation"),
    ("event_id with a slash", enc(rec(event_id="a/b")), "schema_violation"),
    ("event_id too long", enc(rec(event_id="e" * 129)), "schema_violation"),
    ("attendee_id too long", enc(rec(attendee_id="a" * 257)), "schema_violation"),
    ("naive timestamp", enc(rec(ts="2026-01-15T15:00:00")), "bad_timestamp"),
    ("garbage timestamp", enc(rec(ts="yesterday at noon")), "bad_timestamp"),
    ("february 30", enc(rec(ts="2026-02-30T10:00:00Z")), "bad_timestamp"),
    ("far past", enc(rec(ts=86_400_000)), "timestamp_out_of_range"),
    ("far future", enc(rec(ts="2999-01-01T00:00:00Z")), "timestamp_out_of_range"),
    ("far future ms", enc(rec(ts=10**15)), "timestamp_out_of_range"),
]

# Valid records that look unusual: they must be processed, not dead-lettered.
VALID: list[tuple[str, bytes]] = [
    ("unknown extra fields", enc(rec(id="v-1", extra={"nested": [1, 2, {"deep": True}]}, version=3))),
    ("rfc3339 with +05:30 offset", enc(rec(id="v-2", ts="2026-01-15T20:30:00.125+05:30"))),
    ("rfc3339 with Z", enc(rec(id="v-3", ts="2026-01-15T15:00:01Z"))),
    ("big extra string under the limit", enc(rec(id="v-4", note="y" * 60_000))),
    ("poll vote", enc(rec(id="v-5", type="poll_vote", poll_id="p1"))),
    ("cta click of a key account", enc(rec(id="v-6", type="cta_click", cta_id="offer", key_account=True))),
    ("unicode attendee", enc(rec(id="v-7", attendee_id="zoë-🎉"))),
]
