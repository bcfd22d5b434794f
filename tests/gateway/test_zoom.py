"""Zoom webhooks: the signature check and the mapping to LivePulse records (streams/gateway/zoom.py).

Payloads are shaped like Zoom's webhook reference (Webinars and Meetings): the envelope {event, event_ts, payload:
{account_id, object}}, object.id a string in lifecycle and participant events and a number in registration and
chat events, ISO times to the second.
"""

from __future__ import annotations

import copy

import orjson
import pytest

from streams.gateway.zoom import (
    MAPPED_EVENTS,
    REASONS,
    Mapped,
    ZoomRejected,
    event_id_of_uuid,
    map_delivery,
    signature,
    url_validation_answer,
    uuid_of_event_id,
    verify,
)
from streams.ingest.contracts import validate_output
from streams.ingest.decode import decode_event, decode_interaction

KEY = b"gateway-id-key-for-tests"
UUID = "4444AAAiAAAAAiAiAiiA/+=="  # an occurrence (Zoom uuids are base64 of 16 bytes: / + = included)
EVENT_ID = "zoom-4444AAAiAAAAAiAiAiiA_-.."
NOW_MS = 1_768_489_200_000 + 86_400_000

# ---------------------------------------------------------------------------------------------- the known vector
# Provenance: computed independently of this code on 2026-12-07 (2-core AMD EPYC VM) with OpenSSL 3.0.19 in a
# shell, over the exact bytes below (printf '%s'):
#   printf 'v0:1768489265:%s' "$BODY" | openssl dgst -sha256 -hmac 'lp-zoom-secret-2026'
#   printf '%s' 'qgg8vlvZRS6UYooatFL8Aw' | openssl dgst -sha256 -hmac 'lp-zoom-secret-2026'
# The body escapes non-ASCII as Zoom does (ë as \u00eb, the fire engine emoji as the pair \ud83d\ude92).
VECTOR_SECRET = "lp-zoom-secret-2026"
VECTOR_TS = "1768489265"
VECTOR_BODY = (
    rb'{"event":"webinar.chat_message_sent","event_ts":1768489265123,"payload":{"account_id":"AAAAbbbbCCCC1234",'
    rb'"object":{"id":85234567890,"uuid":"4444AAAiAAAAAiAiAiiAii/+Ag==","chat_message":{"date_time":'
    rb'"2026-01-15T15:01:05Z","sender_session_id":"16778240","sender_name":"Zo\u00eb M\u00fcller","sender_email":'
    rb'"Zoe.Muller@Example.com","sender_type":"attendee","recipient_session_id":"","recipient_name":"Everyone",'
    rb'"recipient_email":"","recipient_type":"everyone","message_id":"{A1B2C3D4-0000-1111-2222-333344445555}",'
    rb'"message_content":"Fire drill \ud83d\ude92 now"}}}}'
)
VECTOR_SIGNATURE = "v0=a68c754243927dfb39342f0a7fe0474ed3adf3e87fb0c809e6bd04c76d912a54"
VECTOR_PLAIN_TOKEN = "qgg8vlvZRS6UYooatFL8Aw"
VECTOR_ENCRYPTED_TOKEN = "4036f5a633174ae0f0c25bad686e8270acebaa9dee7f2d96a2a0135353f8f358"


def reason(fn, *args, **kwargs) -> str:
    with pytest.raises(ZoomRejected) as info:
        fn(*args, **kwargs)
    assert info.value.reason in REASONS and info.value.detail
    return info.value.reason


def test_the_known_vector_verifies():
    assert signature(VECTOR_BODY, VECTOR_TS, VECTOR_SECRET) == VECTOR_SIGNATURE
    verify(VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_TS, [VECTOR_SECRET], now_s=int(VECTOR_TS) + 3)


def test_url_validation_answer_matches_the_vector():
    assert url_validation_answer(VECTOR_PLAIN_TOKEN, VECTOR_SECRET) == {
        "plainToken": VECTOR_PLAIN_TOKEN, "encryptedToken": VECTOR_ENCRYPTED_TOKEN}


def test_re_serialised_json_does_not_verify():
    """Parsing and re-encoding the body (orjson writes the emoji as UTF-8, not escaped) changes the bytes."""
    again = orjson.dumps(orjson.loads(VECTOR_BODY))
    assert again != VECTOR_BODY and orjson.loads(again) == orjson.loads(VECTOR_BODY)
    assert reason(verify, again, VECTOR_SIGNATURE, VECTOR_TS, [VECTOR_SECRET], now_s=int(VECTOR_TS)) == \
        "bad_signature"


def test_any_changed_byte_fails():
    for i in (0, len(VECTOR_BODY) // 2, len(VECTOR_BODY) - 1):
        tampered = VECTOR_BODY[:i] + bytes([VECTOR_BODY[i] ^ 1]) + VECTOR_BODY[i + 1:]
        assert reason(verify, tampered, VECTOR_SIGNATURE, VECTOR_TS, [VECTOR_SECRET], now_s=int(VECTOR_TS)) == \
            "bad_signature"
    assert reason(verify, VECTOR_BODY, VECTOR_SIGNATURE, str(int(VECTOR_TS) + 1), [VECTOR_SECRET],
                  now_s=int(VECTOR_TS)) == "bad_signature"  # the timestamp is signed too
    assert reason(verify, VECTOR_BODY, VECTOR_SIGNATURE.upper(), VECTOR_TS, [VECTOR_SECRET],
                  now_s=int(VECTOR_TS)) == "bad_signature"


def test_rotation_accepts_any_configured_secret():
    now = int(VECTOR_TS)
    verify(VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_TS, ["the-new-one", VECTOR_SECRET], now_s=now)
    verify(VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_TS, [VECTOR_SECRET, "the-new-one"], now_s=now)
    new = signature(VECTOR_BODY, VECTOR_TS, "the-new-one")
    verify(VECTOR_BODY, new, VECTOR_TS, [VECTOR_SECRET, "the-new-one"], now_s=now)
    assert reason(verify, VECTOR_BODY, new, VECTOR_TS, [VECTOR_SECRET], now_s=now) == "bad_signature"
    assert reason(verify, VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_TS, [], now_s=now) == "no_secret"


@pytest.mark.parametrize("skew_s,ok", [(-300, True), (300, True), (-301, False), (301, False), (-86_400, False),
                                       (3_600, False)])
def test_stale_and_future_timestamps(skew_s, ok):
    """now_s - timestamp = -skew: a request signed `skew_s` seconds away from the gateway's clock."""
    now = int(VECTOR_TS) - skew_s
    if ok:
        verify(VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_TS, [VECTOR_SECRET], now_s=now)
    else:
        assert reason(verify, VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_TS, [VECTOR_SECRET], now_s=now) == \
            "stale_timestamp"


@pytest.mark.parametrize("sig,ts,why", [(None, VECTOR_TS, "missing_signature"), ("", VECTOR_TS, "missing_signature"),
                                        (VECTOR_SIGNATURE, None, "missing_timestamp"),
                                        (VECTOR_SIGNATURE, "", "missing_timestamp"),
                                        (VECTOR_SIGNATURE, "1768489265000000", "bad_timestamp"),
                                        (VECTOR_SIGNATURE, "17684892.5", "bad_timestamp"),
                                        (VECTOR_SIGNATURE, "-1768489265", "bad_timestamp"),
                                        (VECTOR_SIGNATURE, "١٧٦٨٤٨٩٢٦٥", "bad_timestamp"),
                                        ("v0=é", VECTOR_TS, "bad_signature")])
def test_missing_and_malformed_headers(sig, ts, why):
    assert reason(verify, VECTOR_BODY, sig, ts, [VECTOR_SECRET], now_s=int(VECTOR_TS)) == why


# ---------------------------------------------------------------------------------------------- event ids
@pytest.mark.parametrize("uuid", [UUID, "/ajXp112QmuoKj4854875==", "//ajXp112QmuoKj48548==", "abc-_.:", "ûñï",
                                  "a" * 24])
def test_event_ids_are_valid_and_reversible(uuid):
    event_id = event_id_of_uuid(uuid)
    assert uuid_of_event_id(event_id) == uuid
    validate_output("event", {"event_id": event_id, "type": "started", "ts": NOW_MS})


def test_distinct_uuids_distinct_event_ids():
    uuids = ["ab+c", "ab-c", "ab/c", "ab_c", "ab=c", "ab.c", "ab:c", "ab:2bc", "ab%c"]
    assert len({event_id_of_uuid(u) for u in uuids}) == len(uuids)
    assert event_id_of_uuid(UUID) == EVENT_ID
    assert reason(event_id_of_uuid, "x" * 124) == "bad_field"  # 129 characters with the prefix


# ---------------------------------------------------------------------------------------------- payloads
def envelope(event: str, obj: dict, event_ts: int = 1_768_489_203_512) -> dict:
    return {"event": event, "event_ts": event_ts, "payload": {"account_id": "AAAAbbbbCCCC1234", "object": obj}}


def webinar_object(numeric_id: bool = False, **extra) -> dict:
    obj = {"id": 85234567890 if numeric_id else "85234567890", "uuid": UUID, "host_id": "z8yCxjabcdEFGhij12345",
           "topic": "Streaming analytics 101", "type": 5, "start_time": "2026-01-15T15:00:00Z", "duration": 45,
           "timezone": "Europe/Paris"}
    return obj | extra


def participant(**fields) -> dict:
    base = {"user_id": "16782040", "user_name": "Zoë Müller", "id": "iFxeBPYun6SAiWUzBcEkX",
            "email": "Zoe.Muller@Example.com", "registrant_id": "abcdefghij1234567890AB",
            "participant_user_id": "iFxeBPYun6SAiWUzBcEkX", "participant_uuid": "{A1B2C3D4-5678-90AB-CDEF-1234567890AB}"}
    return {k: v for k, v in (base | fields).items() if v is not None}


def joined(family: str = "webinar", numeric_id: bool = False, **fields) -> dict:
    return envelope(f"{family}.participant_joined", webinar_object(numeric_id, participant=participant(
        **({"join_time": "2026-01-15T15:00:07Z"} | fields))))


def left(family: str = "webinar", **fields) -> dict:
    return envelope(f"{family}.participant_left", webinar_object(participant=participant(
        **({"leave_time": "2026-01-15T15:40:31Z", "leave_reason": "left the webinar."} | fields))),
        1_768_491_631_880)


def registered(family: str = "webinar", **fields) -> dict:
    registrant = {"id": "abcdefghij1234567890AB", "email": "zoe.muller@example.com", "first_name": "Zoë",
                  "last_name": "Müller", "org": "Acme", "job_title": "CMO",
                  "join_url": "https://example.zoom.us/w/85234567890?tk=secret",
                  "tracking_source": {"id": "7xzb1", "source_name": "Newsletter", "tracking_url": "https://x"}}
    registrant = {k: v for k, v in (registrant | fields).items() if v is not None}
    return envelope(f"{family}.registration_created", webinar_object(True, registrant=registrant), 1_768_000_000_123)


def chat(family: str = "webinar", **fields) -> dict:
    message = {"date_time": "2026-01-15T15:01:05Z", "sender_session_id": "16782040", "sender_name": "Zoë Müller",
               "sender_email": "ZOE.MULLER@example.com", "sender_type": "attendee", "recipient_session_id": "",
               "recipient_name": "Everyone", "recipient_email": "", "recipient_type": "everyone",
               "message_id": "{A1B2C3D4-0000-1111-2222-333344445555}", "message_content": "Fire drill 🚒 now"}
    message = {k: v for k, v in (message | fields).items() if v is not None}
    return envelope(f"{family}.chat_message_sent", {"id": 85234567890, "uuid": UUID, "chat_message": message},
                    1_768_489_265_123)


def lifecycle(kind: str, family: str = "webinar", **extra) -> dict:
    obj = webinar_object(**extra)
    if kind == "ended":
        obj["end_time"] = "2026-01-15T15:46:12Z"
    return envelope(f"{family}.{kind}", obj, 1_768_489_204_250 if kind == "started" else 1_768_491_972_031)


def mapped(delivery: dict) -> Mapped:
    got = map_delivery(delivery, id_key=KEY)
    for rec in got.events:
        validate_output("event", rec)
        assert isinstance(decode_event(orjson.dumps(rec), now_ms=NOW_MS), dict)
    for rec in got.interactions:
        validate_output("interaction", rec)
        assert isinstance(decode_interaction(orjson.dumps(rec), now_ms=NOW_MS), dict)
    text = orjson.dumps([got.events, got.interactions]).decode().lower()
    for personal in ("zoe", "müller", "muller", "example.com", "16782040", "ifxebpyun6", "secret"):
        assert personal not in text, f"{personal!r} in a record"
    return got


@pytest.mark.parametrize("family", ["webinar", "meeting"])
def test_started_and_ended(family):
    started = mapped(lifecycle("started", family))
    assert started == Mapped(f"{family}.started", [{
        "event_id": EVENT_ID, "type": "started", "ts": 1_768_489_204_250, "presence": "join_leave",
        "title": "Streaming analytics 101", "scheduled_start": 1_768_489_200_000,
        "scheduled_end": 1_768_489_200_000 + 45 * 60_000}], [], True)
    ended = mapped(lifecycle("ended", family))
    assert ended.events[0]["type"] == "ended" and ended.events[0]["ts"] == 1_768_491_972_000  # end_time
    assert ended.events[0]["presence"] == "join_leave" and not ended.interactions


def test_lifecycle_without_optional_fields():
    obj = {"id": "85234567890", "uuid": UUID}
    assert mapped(envelope("webinar.started", obj)).events == [
        {"event_id": EVENT_ID, "type": "started", "ts": 1_768_489_203_512, "presence": "join_leave"}]
    assert mapped(envelope("webinar.ended", obj)).events[0]["ts"] == 1_768_489_203_512  # no end_time: event_ts
    long = mapped(envelope("webinar.started", obj | {"topic": "x" * 600}))
    assert len(long.events[0]["title"]) == 512


@pytest.mark.parametrize("family", ["webinar", "meeting"])
@pytest.mark.parametrize("numeric_id", [False, True])
def test_join_and_leave(family, numeric_id):
    join = mapped(joined(family, numeric_id))
    leave = mapped(left(family))
    assert join.mapped and not join.events and len(join.interactions) == 1
    j, lv = join.interactions[0], leave.interactions[0]
    assert (j["type"], j["ts"], j["event_id"]) == ("join", 1_768_489_207_000, EVENT_ID)
    assert (lv["type"], lv["ts"]) == ("leave", 1_768_491_631_000)
    assert j["attendee_id"] == lv["attendee_id"] and j["id"] != lv["id"]
    assert set(j) == {"id", "event_id", "attendee_id", "type", "ts"}


def test_one_person_one_attendee_across_registration_joins_leaves_and_chat():
    people = {mapped(d).interactions[0]["attendee_id"] for d in (registered(), joined(), left(), chat())}
    assert len(people) == 1
    assert people == {mapped(joined("meeting")).interactions[0]["attendee_id"]}


def test_the_attendee_rule_without_an_email():
    """No email: the registrant id links a join to its registration; then the Zoom user id, the participant
    uuid, the session; a different key gives other ids (the hash is keyed)."""
    by_registrant = mapped(registered(email=None)).interactions[0]["attendee_id"]
    assert mapped(joined(email=None)).interactions[0]["attendee_id"] == by_registrant
    guest = joined(email=None, registrant_id=None)
    by_user = mapped(guest).interactions[0]["attendee_id"]
    assert by_user != by_registrant
    assert mapped(left(email=None, registrant_id=None)).interactions[0]["attendee_id"] == by_user
    anonymous = joined(email="", registrant_id=None, participant_user_id=None, id="", participant_uuid=None)
    assert mapped(anonymous).interactions[0]["attendee_id"] not in (by_user, by_registrant)
    other_key = map_delivery(joined(), id_key=b"another key").interactions[0]["attendee_id"]
    assert other_key != mapped(joined()).interactions[0]["attendee_id"]
    nobody = joined(email=None, registrant_id=None, participant_user_id=None, id=None, participant_uuid=None,
                    user_id=None)
    assert reason(map_delivery, nobody, id_key=KEY) == "missing_field"


def test_registration_channel_from_the_tracking_source():
    r = mapped(registered()).interactions[0]
    assert (r["type"], r["ts"], r["channel"]) == ("registration", 1_768_000_000_123, "Newsletter")
    assert "channel" not in mapped(registered(tracking_source=None)).interactions[0]
    assert mapped(registered(tracking_source="x" * 80)).interactions[0]["channel"] == "x" * 64


def test_chat():
    c = mapped(chat()).interactions[0]
    assert (c["type"], c["ts"], c["event_id"]) == ("chat", 1_768_489_265_000, EVENT_ID)
    assert mapped(chat(date_time=None)).interactions[0]["ts"] == 1_768_489_265_123  # event_ts


def test_a_retried_delivery_maps_to_the_same_ids_and_another_delivery_does_not():
    for make in (joined, left, registered, chat):
        first, retry = mapped(make()), mapped(orjson.loads(orjson.dumps(make())))
        assert first == retry
    again = chat(message_id="{A1B2C3D4-0000-1111-2222-999999999999}")
    assert mapped(again).interactions[0]["id"] != mapped(chat()).interactions[0]["id"]
    rejoin = joined(user_id="16782999", join_time="2026-01-15T15:10:00Z")
    assert mapped(rejoin).interactions[0]["id"] != mapped(joined()).interactions[0]["id"]
    assert mapped(rejoin).interactions[0]["attendee_id"] == mapped(joined()).interactions[0]["attendee_id"]


def test_the_ids_of_different_occurrences_differ():
    other = copy.deepcopy(joined())
    other["payload"]["object"]["uuid"] = "8888AAAiAAAAAiAiAiiA/+=="
    a, b = mapped(joined()).interactions[0], mapped(other).interactions[0]
    assert a["event_id"] != b["event_id"] and a["id"] != b["id"]


@pytest.mark.parametrize("event", ["webinar.sharing_started", "webinar.participant_feedback", "meeting.deleted",
                                   "webinar.registration_approved", "recording.completed", "user.created",
                                   "webinar", "endpoint.url_validation"])
def test_events_not_mapped(event):
    got = map_delivery({"event": event, "event_ts": 1, "payload": {"object": {}}}, id_key=KEY)
    assert got == Mapped(event, [], [], False)
    assert map_delivery({"event": event}, id_key=KEY).mapped is False  # whatever else the body holds


def test_every_mapped_event_is_covered():
    assert set(MAPPED_EVENTS) == {f"{f}.{a}" for f in ("webinar", "meeting") for a in (
        "started", "ended", "participant_joined", "participant_left", "registration_created", "chat_message_sent")}


def _without(delivery: dict, *path: str) -> dict:
    d = copy.deepcopy(delivery)
    node = d
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return d


def _with(delivery: dict, value: object, *path: str) -> dict:
    d = copy.deepcopy(delivery)
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return d


MALFORMED = {
    "not an object": ([1, 2], "bad_payload"),
    "no event": ({"payload": {}}, "missing_field"),
    "event not a string": ({"event": 5}, "missing_field"),
    "no payload": (_without(joined(), "payload"), "missing_field"),
    "payload a list": (_with(joined(), [], "payload"), "missing_field"),
    "no object": (_without(joined(), "payload", "object"), "missing_field"),
    "no uuid": (_without(joined(), "payload", "object", "uuid"), "missing_field"),
    "uuid a number": (_with(joined(), 5, "payload", "object", "uuid"), "missing_field"),
    "empty uuid": (_with(joined(), "", "payload", "object", "uuid"), "bad_field"),
    "id an object": (_with(joined(), {"n": 1}, "payload", "object", "id"), "bad_field"),
    "id a boolean": (_with(joined(), True, "payload", "object", "id"), "bad_field"),
    "no participant": (_without(joined(), "payload", "object", "participant"), "missing_field"),
    "bad join_time": (_with(joined(), "yesterday", "payload", "object", "participant", "join_time"), "bad_field"),
    "join_time without offset": (_with(joined(), "2026-01-15T15:00:07", "payload", "object", "participant",
                                       "join_time"), "bad_field"),
    "join_time a number": (_with(joined(), 1768489207, "payload", "object", "participant", "join_time"),
                           "bad_field"),
    "no join_time, no event_ts": (_without(_without(joined(), "payload", "object", "participant", "join_time"),
                                           "event_ts"), "missing_field"),
    "event_ts a string": (_with(joined(), "1768489203512", "event_ts"), "bad_field"),
    "event_ts negative": (_with(joined(), -5, "event_ts"), "bad_field"),
    "event_ts beyond any time": (_with(joined(), 10**16, "event_ts"), "bad_field"),
    "no registrant": (_without(registered(), "payload", "object", "registrant"), "missing_field"),
    "registrant without email or id": (_without(_without(registered(), "payload", "object", "registrant", "email"),
                                                "payload", "object", "registrant", "id"), "missing_field"),
    "registration without event_ts": (_without(registered(), "event_ts"), "missing_field"),
    "no chat_message": (_without(chat(), "payload", "object", "chat_message"), "missing_field"),
    "start_time garbage": (_with(lifecycle("started"), "soon", "payload", "object", "start_time"), "bad_field"),
    "end_time garbage": (_with(lifecycle("ended"), "later", "payload", "object", "end_time"), "bad_field"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_deliveries_get_a_clear_reason(name):
    delivery, why = MALFORMED[name]
    assert reason(map_delivery, delivery, id_key=KEY) == why


def test_no_input_raises_anything_but_zoom_rejected():
    """Every mapped event with each field of its object replaced by values of every JSON type."""
    odd = [None, True, 0, -1, 10**30, 1.5, "", "x", "2026-01-15T15:00:07Z", [], {}, [1], {"a": 1}]
    for make in (joined, left, registered, chat, lambda: lifecycle("started"), lambda: lifecycle("ended")):
        base = make()
        obj = base["payload"]["object"]
        paths = [("payload", "object", k) for k in obj] + [("event_ts",), ("payload",)]
        paths += [("payload", "object", k, f) for k in obj if isinstance(obj[k], dict) for f in obj[k]]
        for path in paths:
            for value in odd:
                try:
                    got = map_delivery(_with(base, value, *path), id_key=KEY)
                except ZoomRejected as exc:
                    assert exc.reason in REASONS
                    continue
                for rec in got.events:
                    validate_output("event", rec)
                for rec in got.interactions:
                    validate_output("interaction", rec)
                orjson.dumps([got.events, got.interactions])  # what the gateway produces encodes
