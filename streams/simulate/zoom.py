"""A simulated webinar as Zoom would deliver it: signed webhook requests (headers, raw body), deterministic by seed.

Zoom sends lifecycle, registrations, joins, leaves and chat, and nothing else: heartbeats, polls, questions,
reactions and CTA clicks of the simulated webinar are dropped, as are its deliberate duplicates and malformed
records (Zoom's own faults are modelled instead: retried deliveries and bounded reordering). Zoom gives join,
leave and chat times to the second. `ZoomWebinar.reference` is the same webinar as LivePulse records -- what a
source sending interactions directly would produce of it (join_leave presence, times to the second, no Zoom-less
fields) -- so that the two paths can be compared (tests/gateway).

Bodies are written as Zoom writes them: compact JSON with every non-ASCII character escaped (an emoji as a
surrogate pair), which is exactly what a receiver must sign over raw rather than re-serialise.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from streams.gateway.zoom import event_id_of_uuid, signature
from streams.ingest.decode import Rejection, decode_event, decode_interaction
from streams.simulate.scenario import SimRecord

ZOOM_TYPES = ("registration", "join", "leave", "chat")
NAMES = ("Ann Lee", "Bo Chen", "Zoë Müller", "José Núñez", "Ngozi Okafor", "Søren Berg", "Aiko Sato", "Rahul Rao")
MESSAGES = ("Hello from Lyon!", "Great point 👍", "Can you share the slides?", "🚒 fire demo", "Merci 🙏",
            "Is this recorded?", "Ça marche", "+1")


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]  # content-type, x-zm-request-timestamp, x-zm-signature, x-zm-trackingid
    body: bytes  # the raw body, as signed
    ts: int  # event time (epoch ms) of what it reports: pacing
    attendee: str | None = None  # the simulated attendee it is about (tests map attendee ids with it)


@dataclass
class ZoomWebinar:
    deliveries: list[Delivery]
    reference: list[SimRecord]  # the same webinar as LivePulse records (key = the Zoom event id)
    event_ids: dict[str, str] = field(default_factory=dict)  # simulated event id -> Zoom event id


@dataclass
class _Person:
    email: str
    name: str
    registrant_id: str | None
    user_id: str  # Zoom user id (participant_user_id)
    participant_uuid: str
    session: str = ""  # the current join's user_id (a new one per join)


def sign(body: bytes, timestamp_s: int, secret: str, tracking: str = "") -> dict[str, str]:
    """The headers of one webhook request signed at `timestamp_s`."""
    ts = str(int(timestamp_s))
    headers = {"content-type": "application/json; charset=utf-8", "x-zm-request-timestamp": ts,
               "x-zm-signature": signature(body, ts, secret)}
    if tracking:
        headers["x-zm-trackingid"] = tracking
    return headers


def zoom_webinar(records: Sequence[SimRecord], *, secret: str, seed: int = 0, retry_rate: float = 0.0,
                 reorder_rate: float = 0.0, max_delay_s: float = 20.0, signed_at_s: float | None = None,
                 family: str = "webinar") -> ZoomWebinar:
    """Zoom webhook deliveries of simulated webinars (`streams.simulate.scenario.generate` output), in delivery
    order: event-time order, a share `reorder_rate` held back by up to `max_delay_s` (keep it below the allowed
    lateness), a share `retry_rate` delivered again with the same body up to `max_delay_s` later (re-signed with
    its own timestamp). Signed at `signed_at_s` (default: each delivery's event time)."""
    rng = random.Random(f"livepulse:zoom:{seed}")
    webinars: dict[str, dict] = {}  # simulated event id -> {uuid, number, host, title, scheduled...}
    people: dict[tuple[str, str], _Person] = {}
    items: list[tuple[int, int, dict, str | None]] = []  # (ts ms, seq, zoom delivery, simulated attendee)
    reference: list[tuple[int, int, SimRecord]] = []
    seen: set[bytes] = set()
    now_ms = max((r.ts for r in records), default=0) + 86_400_000
    seq = 0

    def webinar_of(event_id: str) -> dict:
        w = webinars.get(event_id)
        if w is None:
            uuid = base64.b64encode(rng.randbytes(16)).decode()
            w = webinars[event_id] = {"uuid": uuid, "event_id": event_id_of_uuid(uuid),
                                      "number": rng.randrange(10**10, 10**11), "host": _token(rng, 22),
                                      "topic": f"Webinar {event_id}", "start": None, "duration": None}
        return w

    def zoom_object(w: dict, numeric_id: bool) -> dict:
        obj: dict = {"id": w["number"] if numeric_id else str(w["number"]), "uuid": w["uuid"], "host_id": w["host"],
                     "topic": w["topic"], "type": 5 if family == "webinar" else 2}
        if w["start"] is not None:
            obj["start_time"] = _iso(w["start"])
            obj["duration"] = w["duration"]
        obj["timezone"] = "Europe/Paris"
        return obj

    def add(ts: int, delivery: dict, attendee: str | None, ref: SimRecord) -> None:
        nonlocal seq
        seq += 1
        items.append((ts, seq, delivery, attendee))
        reference.append((ts, seq, ref))

    for rec in records:
        if rec.value in seen:
            continue  # the simulator's own re-sends: Zoom's faults are modelled below
        seen.add(rec.value)
        is_event = rec.topic == "events"
        decoded = (decode_event if is_event else decode_interaction)(rec.value, now_ms=now_ms)
        if isinstance(decoded, Rejection):
            continue
        w = webinar_of(decoded["event_id"])
        eid, ts = w["event_id"], decoded["ts"]
        if is_event:
            if "title" in decoded:
                w["topic"] = decoded["title"]
            if "scheduled_start" in decoded:
                w["start"] = decoded["scheduled_start"] // 1000 * 1000
                end = decoded.get("scheduled_end")
                w["duration"] = max(1, round((end - w["start"]) / 60_000)) if end else 60
            if decoded["type"] not in ("started", "ended"):
                continue  # Zoom's webinar.created / updated are not mapped: nothing to deliver
            kind = decoded["type"]
            obj = zoom_object(w, numeric_id=False)
            life: dict = {"event_id": eid, "type": kind, "presence": "join_leave", "title": w["topic"]}
            if kind == "ended":
                obj["end_time"] = _iso(ts)
                life["ts"] = ts // 1000 * 1000
            else:
                life["ts"] = ts
            if w["start"] is not None:
                life["scheduled_start"] = w["start"]
                life["scheduled_end"] = w["start"] + w["duration"] * 60_000
            add(ts, {"event": f"{family}.{kind}", "event_ts": ts,
                     "payload": {"account_id": "lp-sim-account", "object": obj}},
                None, SimRecord("events", eid.encode(), orjson.dumps(life), ts))
            continue
        kind = decoded["type"]
        if kind not in ZOOM_TYPES:
            continue  # heartbeats, polls, questions, reactions, CTA clicks: Zoom has no webhook for them
        aid = decoded["attendee_id"]
        person = people.get((eid, aid))
        if person is None:
            person = people[(eid, aid)] = _Person(
                email=f"{aid}@example.com", name=rng.choice(NAMES), registrant_id=None, user_id=_token(rng, 22),
                participant_uuid=_uuid(rng))
        ref = {"id": decoded["id"], "event_id": eid, "attendee_id": aid, "type": kind}
        if kind == "registration":
            person.registrant_id = person.registrant_id or _token(rng, 22)
            registrant: dict = {"id": person.registrant_id, "email": person.email,
                                "first_name": person.name.split()[0], "last_name": person.name.split()[-1],
                                "join_url": f"https://example.zoom.us/w/{w['number']}?tk={_token(rng, 16)}"}
            if decoded.get("channel"):
                registrant["tracking_source"] = {"id": _token(rng, 12), "source_name": decoded["channel"],
                                                 "tracking_url": f"https://example.zoom.us/webinar/register/"
                                                                 f"{_token(rng, 12)}"}
                ref["channel"] = decoded["channel"]
            obj = zoom_object(w, numeric_id=True) | {"registrant": registrant}
            ref["ts"] = ts
        elif kind in ("join", "leave"):
            if kind == "join" or not person.session:
                person.session = str(rng.randrange(16_000_000, 17_000_000))
            participant = {"user_id": person.session, "user_name": person.name, "id": person.user_id,
                           f"{kind}_time": _iso(ts), "email": _case_variant(person.email, rng),
                           "participant_user_id": person.user_id, "participant_uuid": person.participant_uuid}
            if person.registrant_id:
                participant["registrant_id"] = person.registrant_id
            if kind == "leave":
                participant["leave_reason"] = "left the webinar."
            obj = zoom_object(w, numeric_id=False) | {"participant": participant}
            ref["ts"] = ts // 1000 * 1000
        else:
            message = {"date_time": _iso(ts), "sender_session_id": person.session or _token(rng, 8),
                       "sender_name": person.name, "sender_email": _case_variant(person.email, rng),
                       "sender_type": "attendee", "recipient_session_id": "", "recipient_name": "Everyone",
                       "recipient_email": "", "recipient_type": "everyone", "message_id": _uuid(rng),
                       "message_content": rng.choice(MESSAGES)}
            obj = {"id": w["number"], "uuid": w["uuid"], "chat_message": message}
            ref["ts"] = ts // 1000 * 1000
        event = {"registration": "registration_created", "join": "participant_joined", "leave": "participant_left",
                 "chat": "chat_message_sent"}[kind]
        add(ts, {"event": f"{family}.{event}", "event_ts": ts,
                 "payload": {"account_id": "lp-sim-account", "object": obj}},
            aid, SimRecord("interactions", eid.encode(), orjson.dumps(ref), ref["ts"]))

    max_delay = int(max_delay_s * 1000)
    staged: list[tuple[int, int, Delivery]] = []
    for ts, n, delivery, attendee in sorted(items, key=lambda x: (x[0], x[1])):
        body = json.dumps(delivery, separators=(",", ":"), ensure_ascii=True).encode()
        tracking = _token(rng, 20)
        at = ts + (rng.randint(0, max_delay) if max_delay and rng.random() < reorder_rate else 0)
        copies = [at] + ([at + rng.randint(0, max_delay)] if rng.random() < retry_rate else [])
        for k, when in enumerate(copies):
            signed = int(signed_at_s) if signed_at_s is not None else when // 1000
            staged.append((when, 2 * n + k, Delivery(sign(body, signed, secret, tracking), body, ts, attendee)))
    staged.sort(key=lambda s: (s[0], s[1]))
    return ZoomWebinar([s[2] for s in staged], [r for _, _, r in sorted(reference, key=lambda x: (x[0], x[1]))],
                       {e: w["event_id"] for e, w in webinars.items()})


def _iso(ms: int) -> str:
    """A Zoom time: UTC, to the second."""
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token(rng: random.Random, n: int) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(n)).decode()[:n]


def _uuid(rng: random.Random) -> str:
    return "{" + "-".join(rng.randbytes(k).hex().upper() for k in (4, 2, 2, 2, 6)) + "}"


def _case_variant(email: str, rng: random.Random) -> str:
    """Zoom reports the email as the person typed it: the same address in another case now and then."""
    return email.capitalize() if rng.random() < 0.3 else email
