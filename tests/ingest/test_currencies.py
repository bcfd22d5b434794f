"""Currency labels are ISO 4217 codes: anything else is dead-lettered at decode time, never a metric label."""

from __future__ import annotations

import re

import orjson
import pytest

from streams.ingest.contracts import schema
from streams.ingest.currencies import CODES, CURRENT, WITHDRAWN
from streams.ingest.decode import Rejection, decode_event, decode_opportunity
from streams.outputs.metrics import NO_CURRENCY
from streams.settings import Settings
from streams.testing import raw, run_records

NOW_MS = 1_767_000_000_000
EVENT = {"event_id": "ev-c", "type": "scheduled", "ts": NOW_MS - 60_000, "cost": 1200, "organizer_id": "org"}
OPP = {"opportunity_id": "o-1", "organizer_id": "org", "account_id": "acme", "amount": 10, "stage": "created", "ts": NOW_MS - 60_000}


def test_the_input_schemas_accept_exactly_the_codes_of_the_module():
    assert schema("event")["properties"]["currency"]["enum"] == list(CODES)
    assert schema("opportunity")["properties"]["currency"]["enum"] == list(CODES)


def test_the_codes_look_like_iso_4217():
    assert all(re.fullmatch(r"[A-Z]{3}", c) for c in CODES) and len(set(CODES)) == len(CODES)
    assert not set(CURRENT) & set(WITHDRAWN)
    assert {"EUR", "USD", "GBP", "JPY", "CHF", "INR", "CNY", "BRL", "XCG", "ZWG"} <= set(CODES)
    assert NO_CURRENCY in CODES  # the label of figures without a currency is a code too
    assert 170 <= len(CURRENT) <= 190  # ISO 4217 list one has about 180 alphabetic codes
    for long_gone in ("DEM", "FRF", "ITL", "ESP", "VEF", "ZMK", "LTL", "EEK"):  # withdrawn long ago
        assert long_gone not in CODES


@pytest.mark.parametrize("code", ["EUR", "USD", "JPY", "XCG", "BGN"])
def test_iso_codes_decode(code):
    assert decode_event(orjson.dumps({**EVENT, "currency": code}), now_ms=NOW_MS)["currency"] == code
    assert decode_opportunity(orjson.dumps({**OPP, "currency": code}), now_ms=NOW_MS)["currency"] == code


@pytest.mark.parametrize("code", ["ABC", "ZZZ", "QQQ", "DEM", "eur", "EU", "EURO", 978, ""])
def test_other_codes_are_rejected_with_a_short_clear_error(code):
    for decode, record in ((decode_event, EVENT), (decode_opportunity, OPP)):
        got = decode(orjson.dumps({**record, "currency": code}), now_ms=NOW_MS)
        assert isinstance(got, Rejection), code
        assert got.reason == "schema_violation"
        assert got.error.startswith("$.currency: ") and "ISO 4217" in got.error and len(got.error) < 80, got.error


def test_a_forged_currency_is_dead_lettered_and_makes_no_label():
    """Through the processor: the event with a made-up currency goes to the DLQ; its figures carry no such label."""
    s = Settings()
    records = [raw(s.topic_events, {**EVENT, "event_id": f"ev-{code}", "currency": code}, offset=n)
               for n, code in enumerate(["EUR", "ABC", "ZZZ"])]
    got = run_records(records, s, wall_start=NOW_MS / 1000, finish=False)
    assert [(d["reason"], d["error"][:12]) for d in got.dead_letters] == [("schema_violation", "$.currency: ")] * 2
    assert sorted(got.processor.events) == ["ev-EUR"]
