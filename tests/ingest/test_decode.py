"""Decoding and validation: every malformed input gets its reason, every valid one its normalised form."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ingest.contracts import validate_output
from streams.ingest.deadletter import dead_letter
from streams.ingest.decode import Rejection, decode_event, decode_interaction
from tests.ingest.corpus import CORPUS, VALID

NOW = 1_768_489_200_000 + 3_600_000


@pytest.mark.parametrize("name,value,reason", CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_input_is_rejected_with_its_reason(name, value, reason):
    got = decode_interaction(value, now_ms=NOW)
    assert isinstance(got, Rejection), f"{name} was accepted: {got}"
    assert got.reason == reason, got.error
    assert got.error
    if reason == "schema_violation":
        assert got.error.startswith("$"), "schema errors name the failing JSON path"


@pytest.mark.parametrize("name,value", VALID, ids=[v[0] for v in VALID])
def test_unusual_but_valid_input_is_accepted(name, value):
    got = decode_interaction(value, now_ms=NOW)
    assert isinstance(got, dict), got
    assert isinstance(got["ts"], int) and not isinstance(got["ts"], bool)


def test_timestamps_normalise_to_epoch_ms_exactly():
    base = b'{"id":"i","event_id":"e","attendee_id":"a","type":"join","ts":%s}'
    assert decode_interaction(base % b'"2026-01-15T20:30:00.125+05:30"', now_ms=NOW)["ts"] == 1_768_489_200_125
    assert decode_interaction(base % b'"2026-01-15T15:00:00Z"', now_ms=NOW)["ts"] == 1_768_489_200_000
    assert decode_interaction(base % b"1768489200007", now_ms=NOW)["ts"] == 1_768_489_200_007
    integral_float = decode_interaction(base % b"1.768489200007e12", now_ms=NOW)["ts"]
    assert integral_float == 1_768_489_200_007 and type(integral_float) is int


def test_event_scheduled_times_are_normalised_and_checked():
    ok = decode_event(b'{"event_id":"e","type":"scheduled","ts":1768489200000,'
                      b'"scheduled_start":"2026-01-15T16:00:00+01:00","cost":100,"currency":"EUR"}', now_ms=NOW)
    assert ok["scheduled_start"] == 1_768_489_200_000
    bad = decode_event(b'{"event_id":"e","type":"scheduled","ts":1768489200000,"scheduled_start":"soon"}',
                       now_ms=NOW)
    assert bad == Rejection("bad_timestamp", bad.error) and "scheduled_start" in bad.error
    assert decode_event(b'{"event_id":"e","type":"ended","ts":1768489200000,"currency":"eur"}',
                        now_ms=NOW).reason == "schema_violation"


def test_scheduled_times_may_lie_far_ahead_but_ts_may_not():
    day = 86_400_000
    planned = decode_event(orjson.dumps({"event_id": "e", "type": "scheduled", "ts": NOW,
                                         "scheduled_start": NOW + 60 * day, "scheduled_end": NOW + 60 * day + 3_600_000}),
                           now_ms=NOW)
    assert planned["scheduled_start"] == NOW + 60 * day, "a webinar two months ahead is normal"
    too_far = decode_event(orjson.dumps({"event_id": "e", "type": "scheduled", "ts": NOW,
                                         "scheduled_start": NOW + 6 * 366 * day}), now_ms=NOW)
    assert too_far.reason == "timestamp_out_of_range" and "scheduled_start" in too_far.error
    assert decode_event(orjson.dumps({"event_id": "e", "type": "started", "ts": NOW + 2 * day}),
                        now_ms=NOW).reason == "timestamp_out_of_range"


def test_max_bytes_is_configurable():
    value = VALID[0][1]
    assert decode_interaction(value, now_ms=NOW, max_bytes=len(value)) != Rejection("too_large", "")
    assert decode_interaction(value, now_ms=NOW, max_bytes=len(value) - 1).reason == "too_large"


@pytest.mark.parametrize("name,value,reason", CORPUS[:8], ids=[c[0] for c in CORPUS[:8]])
def test_dead_letter_carries_the_original_bytes_and_validates(name, value, reason):
    rejection = decode_interaction(value, now_ms=NOW)
    record = dead_letter(rejection, topic="livepulse.interactions", partition=3, offset=99, key=b"corpus-ev",
                         value=value, schema="interaction", now_ms=NOW)
    validate_output("dead_letter", record)
    assert record["reason"] == reason
    assert (base64.b64decode(record["value_b64"]) if record["value_b64"] is not None else None) == value
    assert base64.b64decode(record["key_b64"]) == b"corpus-ev"
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
        "livepulse.interactions", 3, 99)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(value):
    got = decode_interaction(value, now_ms=NOW)
    assert isinstance(got, (dict, Rejection))


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_arbitrary_json_never_raises(obj):
    import orjson

    got = decode_interaction(orjson.dumps(obj), now_ms=NOW)
    assert isinstance(got, (dict, Rejection))
