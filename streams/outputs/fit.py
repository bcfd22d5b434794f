"""Every record LivePulse writes fits its topic's max.message.bytes (`LIVEPULSE_MAX_MESSAGE_BYTES`).

A record the broker refuses (MESSAGE_TOO_LARGE) fails its whole send: the worker exits without committing, reads
the same input again, builds the same record and fails again -- a crash loop. So sizes are checked before
sending, and what does not fit is never sent (docs/caps.md "Record sizes"):
- state records fit by construction (caps and split records); one that does not is a bug: RecordTooLarge, the
  worker exits rather than persist half a state;
- a dead letter embeds at most EMBED_BYTES of the rejected record's key and value (the rest is cut, and the
  original sizes are given);
- a summary too large drops its oldest minutes from the attendance curve and the drop-off minutes (every minute
  is on the minute topic) and says how many;
- any other output record too large is replaced by a dead letter `output_too_large` that names it.
"""

from __future__ import annotations

import base64

import orjson

# The most framing one record costs beside its key, value and headers when sent alone: the record batch header
# (61 bytes), the record's attributes and varints (at most 21), and the headers' lengths.
FRAMING = 61 + 21
EMBED_BYTES = 512 * 1024  # most original bytes (key + value) a dead letter embeds: ~683 KiB in base64
DLQ_KEY_BYTES = 4096  # most bytes of a dead letter's Kafka key (the rejected record's key, cut)


class RecordTooLarge(ValueError):
    """A record that the broker would refuse: never sent."""


def record_bytes(key: bytes | None, value: bytes | None, headers=()) -> int:
    """An upper bound of the bytes a record takes in a record batch of its own (what max.message.bytes limits)."""
    size = FRAMING + (len(key) if key else 0) + (len(value) if value else 0)
    for name, data in headers:
        size += len(name.encode()) + (len(data) if data else 0) + 10
    return size


def check(topic: str, key: bytes | None, value: bytes | None, headers, limit: int) -> None:
    size = record_bytes(key, value, headers)
    if size > limit:
        raise RecordTooLarge(f"a record of {size} bytes for {topic} (key {(key or b'')[:80]!r}) is over the "
                             f"{limit} bytes the topic accepts (LIVEPULSE_MAX_MESSAGE_BYTES): not sent")


def dead_letter(key: bytes | None, record: dict, limit: int) -> tuple[bytes | None, bytes]:
    """The Kafka key and value of a dead letter, its embedded key and value cut to fit."""
    if key is not None and len(key) > DLQ_KEY_BYTES:
        key = key[:DLQ_KEY_BYTES]
    value = orjson.dumps(record)
    if record_bytes(key, value) <= limit:
        return key, value
    embedded = {name: base64.b64decode(record[f"{name}_b64"]) if record.get(f"{name}_b64") else None
                for name in ("key", "value")}
    room = min(EMBED_BYTES, (limit - FRAMING - len(key or b"") - 16_384) * 3 // 4)  # (fields besides: < 8 KiB)
    cut = dict(record)
    cut["truncated"] = {f"{name}_bytes": len(data) for name, data in embedded.items() if data is not None}
    for name in ("key", "value"):
        data = embedded[name]
        if data is not None:
            kept = data[:max(0, room)]
            room -= len(kept)
            cut[f"{name}_b64"] = base64.b64encode(kept).decode("ascii")
    value = orjson.dumps(cut)
    if record_bytes(key, value) > limit:  # (cannot happen with limit >= 1 MiB: the error is at most 6 KB)
        raise RecordTooLarge(f"a dead letter of {len(value)} bytes does not fit in {limit}")
    return key, value


def summary(key: bytes, record: dict, limit: int) -> bytes | None:
    """A summary that fits: its oldest minutes left out of the curve and drop-off minutes; None if none does."""
    curve, drops = record["attendance_curve"], record["drop_off_minutes"]
    lo, hi = 0, len(curve)  # the fewest oldest minutes to leave out (binary search: size falls with each)
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        first = curve[mid]["minute"] if mid < len(curve) else None
        cut = dict(record, attendance_curve=curve[mid:],
                   drop_off_minutes=[d for d in drops if first is not None and d["minute"] >= first],
                   **({"minutes_left_out": mid} if mid else {}))
        value = orjson.dumps(cut)
        if record_bytes(key, value) <= limit:
            best, hi = value, mid - 1
        else:
            lo = mid + 1
    return best


def output_too_large(topic: str, partition: int, key: bytes | None, value: bytes, limit: int,
                     now_ms: int) -> dict:
    """The dead letter that stands for an output record too large to send (schemas/dead_letter.json)."""
    return {
        "reason": "output_too_large",
        "error": f"a {topic} record of {record_bytes(key, value)} bytes is over the {limit} bytes the topic accepts "
                 "(LIVEPULSE_MAX_MESSAGE_BYTES); it was not sent, its start is embedded",
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": None,
        "key_b64": None if key is None else base64.b64encode(key[:DLQ_KEY_BYTES]).decode("ascii"),
        "value_b64": base64.b64encode(value[:EMBED_BYTES]).decode("ascii"),
        "received_at": now_ms,
        "schema": "output",
        "truncated": {"value_bytes": len(value)},
    }
