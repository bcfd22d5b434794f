"""Zoom webhooks (Webinars and Meetings) -> LivePulse records: the signature check and a pure mapping.

No HTTP and no Kafka here: the gateway reads the request, calls `verify` on the raw bytes, parses the JSON,
answers `endpoint.url_validation` with `url_validation_answer`, and produces what `map_delivery` returns. Every
rule is in docs/zoom.md; in short:

* `event_id` = "zoom-" + the occurrence's `object.uuid` with `+ / =` written `- _ .` and any other character but
  ASCII letters and digits as ":" + the hex of its UTF-8 bytes: reversible (`uuid_of_event_id`), so two uuids never
  share an event id. `object.id` (the webinar number) is reused by every occurrence of a recurring webinar.
* `attendee_id` = "zm-" + a keyed hash (HMAC-SHA256 with the gateway's id key) of the person's lower-cased email
  when the delivery has one, else of the most stable Zoom id it has: one person is one attendee across their
  registration, joins, leaves and chat, and no email or name leaves this module in the clear.
* interaction `id` = a keyed hash of the delivery's event name and payload: Zoom retries a delivery with the same
  body and no delivery id, so a retry maps to the same id and the worker drops it as a duplicate.
* event records carry `presence: "join_leave"`: Zoom sends no heartbeats, only reliable joins and leaves.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

EVENT_PREFIX = "zoom-"
ATTENDEE_PREFIX = "zm-"
# Stable reason codes of ZoomRejected (the gateway counts rejects by them; `bad_json` is the gateway's own).
REASONS = ("missing_signature", "missing_timestamp", "bad_timestamp", "stale_timestamp", "bad_signature",
           "no_secret", "bad_json", "bad_payload", "missing_field", "bad_field")
MAX_EVENT_ID = 128  # schemas: event_id pattern ^[A-Za-z0-9._:-]{1,128}$
MAX_TITLE = 512
MAX_CHANNEL = 64
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: beyond is no time (and no 64-bit JSON number after math)
MAX_DURATION_MIN = 31 * 24 * 60  # a scheduled duration longer than a month is not one
_TO_EVENT_ID = {"+": "-", "/": "_", "=": "."}
_FROM_EVENT_ID = {v: k for k, v in _TO_EVENT_ID.items()}
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_HEX = frozenset("0123456789abcdef")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class ZoomRejected(Exception):
    """A request or delivery LivePulse cannot accept; `reason` is one of REASONS, `detail` says what and where."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Mapped:
    event_name: str  # Zoom's "event"
    events: list[dict]  # records for livepulse.events (schemas/event.json)
    interactions: list[dict]  # records for livepulse.interactions (schemas/interaction.json)
    mapped: bool  # False: an event LivePulse does not map (answer 200, count it by name)


# ---------------------------------------------------------------------------------------------- signatures
def signature(raw_body: bytes, timestamp: str, secret: str) -> str:
    """Zoom's x-zm-signature of a request: v0= + hex HMAC-SHA256(secret, "v0:<timestamp>:<raw body>")."""
    message = b"v0:" + timestamp.encode("ascii") + b":" + raw_body
    return "v0=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(raw_body: bytes, signature: str | None, timestamp: str | None, secrets: Sequence[str], now_s: float,
           tolerance_s: float = 300.0) -> None:
    """Accept the request only if one of `secrets` (several during a rotation) signed exactly these bytes at a
    time within `tolerance_s` of `now_s` (a replayed request is stale). Raises ZoomRejected."""
    if not signature:
        raise ZoomRejected("missing_signature", "no x-zm-signature header")
    if not timestamp:
        raise ZoomRejected("missing_timestamp", "no x-zm-request-timestamp header")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise ZoomRejected("bad_timestamp", "x-zm-request-timestamp is not whole epoch seconds")
    if abs(now_s - int(timestamp)) > tolerance_s:
        raise ZoomRejected("stale_timestamp", f"x-zm-request-timestamp is more than {tolerance_s:g} s from the "
                                              "gateway's clock")
    if not secrets:
        raise ZoomRejected("no_secret", "no Zoom secret token is configured")
    given = signature.encode("utf-8", "replace")
    ok = False
    for secret in secrets:  # every secret is tried: the time taken does not say which one matched
        ok |= hmac.compare_digest(_signature(raw_body, timestamp, secret).encode(), given)
    if not ok:
        raise ZoomRejected("bad_signature", "x-zm-signature does not match the body with any configured secret")


_signature = signature  # (the parameter of verify shadows the function)


def url_validation_answer(plain_token: str, secret: str) -> dict:
    """The answer to `endpoint.url_validation` (Zoom checks the endpoint with it, and again every 72 hours)."""
    encrypted = hmac.new(secret.encode(), plain_token.encode(), hashlib.sha256).hexdigest()
    return {"plainToken": plain_token, "encryptedToken": encrypted}


# ---------------------------------------------------------------------------------------------- identities
def event_id_of_uuid(uuid: str) -> str:
    """The LivePulse event id of one Zoom occurrence (reversible: see the module docstring)."""
    out = [EVENT_PREFIX]
    for ch in uuid:
        if ch in _PLAIN:
            out.append(ch)
        elif ch in _TO_EVENT_ID:
            out.append(_TO_EVENT_ID[ch])
        else:
            out.append("".join(f":{b:02x}" for b in ch.encode("utf-8", "surrogatepass")))
    event_id = "".join(out)
    if not uuid or len(event_id) > MAX_EVENT_ID:
        raise ZoomRejected("bad_field", f"$.payload.object.uuid: empty or too long for an event id "
                                        f"({len(event_id)} > {MAX_EVENT_ID} characters encoded)")
    return event_id


def uuid_of_event_id(event_id: str) -> str:
    """The Zoom uuid an event id was made from (the inverse of event_id_of_uuid)."""
    if not event_id.startswith(EVENT_PREFIX):
        raise ValueError(f"{event_id!r} is not a Zoom event id")
    text, raw, i = event_id[len(EVENT_PREFIX):], bytearray(), 0
    while i < len(text):
        ch = text[i]
        if ch == ":":
            pair = text[i + 1:i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise ValueError(f"{event_id!r}: bad escape at {i}")
            raw.append(int(pair, 16))
            i += 3
            continue
        raw += _FROM_EVENT_ID.get(ch, ch).encode()
        i += 1
    return raw.decode("utf-8", "surrogatepass")


def attendee_id(id_key: bytes, *, email: object = None, ids: Sequence[tuple[str, object]] = ()) -> str:
    """One person's attendee id: a keyed hash of their lower-cased email if given, else of the first present id
    of `ids` ((kind, value), most stable first). Raises ZoomRejected when there is nothing to identify them by."""
    if isinstance(email, str) and "@" in email.strip():
        identity = "email:" + email.strip().lower()
    else:
        identity = next((f"{kind}:{value}" for kind, value in ids
                         if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip()), "")
        if not identity:
            raise ZoomRejected("missing_field", "no email and no participant id to identify the person by")
    return ATTENDEE_PREFIX + hmac.new(id_key, identity.encode(), hashlib.sha256).hexdigest()[:32]


def _participant_id(id_key: bytes, p: dict) -> str:
    # Registrant ids and participant ids name the same person in a registration and in a join; the per-join
    # user_id (a session number) only when nothing else is there.
    return attendee_id(id_key, email=p.get("email"), ids=(
        ("registrant", p.get("registrant_id")), ("user", p.get("participant_user_id")), ("user", p.get("id")),
        ("participant", p.get("participant_uuid")), ("session", p.get("user_id"))))


def _interaction_id(id_key: bytes, event: str, payload: dict) -> str:
    try:
        content = orjson.dumps([event, payload], option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # (a payload parsed from JSON always encodes; anything else is refused)
        raise ZoomRejected("bad_payload", f"$.payload does not encode as JSON: {exc}") from None
    return ATTENDEE_PREFIX + hmac.new(id_key, b"id:" + content, hashlib.sha256).hexdigest()[:40]


# ---------------------------------------------------------------------------------------------- mapping
def map_delivery(delivery: dict, *, id_key: bytes) -> Mapped:
    """The LivePulse records of one parsed Zoom delivery. Raises ZoomRejected (and nothing else) when a mapped
    event lacks what it needs; events LivePulse does not map come back with mapped=False."""
    if not isinstance(delivery, dict):
        raise ZoomRejected("bad_payload", f"expected a JSON object, got {type(delivery).__name__}")
    event = delivery.get("event")
    if not isinstance(event, str) or not event:
        raise ZoomRejected("missing_field", "$.event: missing or not a string")
    family, _, action = event.partition(".")
    handler = _HANDLERS.get(action) if family in ("webinar", "meeting") else None
    if handler is None:
        return Mapped(event, [], [], False)
    payload = _object(delivery, "payload", "$")
    obj = _object(payload, "object", "$.payload")
    _webinar_number(obj)
    uuid = obj.get("uuid")
    if not isinstance(uuid, str):
        raise ZoomRejected("missing_field", "$.payload.object.uuid: missing or not a string")
    event_ts = delivery.get("event_ts")
    if event_ts is not None and (type(event_ts) is not int or not 0 <= event_ts <= MAX_MS):
        raise ZoomRejected("bad_field", "$.event_ts: not epoch milliseconds")
    ctx = _Context(event, event_id_of_uuid(uuid), event_ts, obj, payload, id_key)
    events, interactions = handler(ctx)
    return Mapped(event, events, interactions, True)


@dataclass(frozen=True)
class _Context:
    event: str
    event_id: str
    event_ts: int | None
    obj: dict
    payload: dict
    id_key: bytes

    def ts(self, value: object, path: str) -> int:
        """Epoch ms of a Zoom time (ISO 8601 with Z), or the delivery's event_ts when the field is absent."""
        if value is None or value == "":
            if self.event_ts is None:
                raise ZoomRejected("missing_field", f"{path}: missing, and no $.event_ts either")
            return self.event_ts
        ms = _iso_ms(value)
        if ms is None:
            raise ZoomRejected("bad_field", f"{path}: {str(value)[:64]!r} is not an ISO 8601 time with offset")
        return ms

    def interaction(self, kind: str, attendee: str, ts: int, **extra: object) -> dict:
        return {"id": _interaction_id(self.id_key, self.event, self.payload), "event_id": self.event_id,
                "attendee_id": attendee, "type": kind, "ts": ts, **extra}


def _lifecycle(kind: str):  # type: ignore[no-untyped-def]
    def handle(ctx: _Context) -> tuple[list[dict], list[dict]]:
        obj = ctx.obj
        if kind == "started":
            ts = ctx.event_ts if ctx.event_ts is not None else ctx.ts(obj.get("start_time"),
                                                                      "$.payload.object.start_time")
        else:
            ts = ctx.ts(obj.get("end_time"), "$.payload.object.end_time")
        rec: dict = {"event_id": ctx.event_id, "type": kind, "ts": ts, "presence": "join_leave"}
        topic = obj.get("topic")
        if isinstance(topic, str) and topic:
            rec["title"] = topic[:MAX_TITLE]
        if obj.get("start_time"):
            start = ctx.ts(obj["start_time"], "$.payload.object.start_time")
            rec["scheduled_start"] = start
            duration = obj.get("duration")
            if type(duration) is int and 0 < duration <= MAX_DURATION_MIN:
                rec["scheduled_end"] = start + duration * 60_000
        return [rec], []
    return handle


def _participant(kind: str):  # type: ignore[no-untyped-def]
    field = "join_time" if kind == "join" else "leave_time"

    def handle(ctx: _Context) -> tuple[list[dict], list[dict]]:
        p = _object(ctx.obj, "participant", "$.payload.object")
        ts = ctx.ts(p.get(field), f"$.payload.object.participant.{field}")
        return [], [ctx.interaction(kind, _participant_id(ctx.id_key, p), ts)]
    return handle


def _registration(ctx: _Context) -> tuple[list[dict], list[dict]]:
    r = _object(ctx.obj, "registrant", "$.payload.object")
    who = attendee_id(ctx.id_key, email=r.get("email"), ids=(("registrant", r.get("id")),))
    extra = {}
    source = r.get("tracking_source")
    name = source.get("source_name") if isinstance(source, dict) else source
    if isinstance(name, str) and name.strip():
        extra["channel"] = name.strip()[:MAX_CHANNEL]
    return [], [ctx.interaction("registration", who, ctx.ts(None, "$.event_ts"), **extra)]


def _chat(ctx: _Context) -> tuple[list[dict], list[dict]]:
    m = _object(ctx.obj, "chat_message", "$.payload.object")
    who = attendee_id(ctx.id_key, email=m.get("sender_email"), ids=(("session", m.get("sender_session_id")),))
    return [], [ctx.interaction("chat", who, ctx.ts(m.get("date_time"), "$.payload.object.chat_message.date_time"))]


_HANDLERS = {
    "started": _lifecycle("started"),
    "ended": _lifecycle("ended"),
    "participant_joined": _participant("join"),
    "participant_left": _participant("leave"),
    "registration_created": _registration,
    "chat_message_sent": _chat,
}
MAPPED_EVENTS = tuple(f"{family}.{action}" for family in ("webinar", "meeting") for action in _HANDLERS)


def _object(parent: dict, name: str, path: str) -> dict:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise ZoomRejected("missing_field", f"{path}.{name}: missing or not an object")
    return value


def _webinar_number(obj: dict) -> None:
    """object.id is a JSON string in some events and a number in others: both are fine (it is not used)."""
    number = obj.get("id")
    if number is not None and (isinstance(number, bool) or not isinstance(number, (str, int))):
        raise ZoomRejected("bad_field", "$.payload.object.id: neither a string nor a number")


def _iso_ms(value: object) -> int | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    ms = (parsed - _EPOCH) // _ONE_MS  # exact integer arithmetic
    return ms if ms >= 0 else None
