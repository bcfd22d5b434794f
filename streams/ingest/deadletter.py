"""The dead-letter record of a rejected input: enough to understand, fix and replay it (schemas/dead_letter.json)."""

from __future__ import annotations

import base64

from streams.ingest.decode import Rejection


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def dead_letter(rejection: Rejection, *, topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None, schema: str, now_ms: int) -> dict:
    return {
        "reason": rejection.reason,
        "error": rejection.error[:1000] or rejection.reason,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "key_b64": _b64(key),
        "value_b64": _b64(value),
        "received_at": now_ms,
        "schema": schema,
    }
