"""The contracts themselves: valid draft 2020-12 schemas whose examples validate (and decode, for inputs)."""

from __future__ import annotations

import jsonschema
import orjson
import pytest

from streams.ingest.contracts import KINDS, schema, validate_output
from streams.ingest.decode import decode_event, decode_interaction

NOW = 1_768_489_200_000 + 3_600_000


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_2020_12_with_examples(kind):
    doc = schema(kind)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc["examples"], f"{kind} has no examples"
    reference = jsonschema.Draft202012Validator(doc, format_checker=jsonschema.FormatChecker())
    for example in doc["examples"]:
        reference.validate(example)  # an independent validator agrees
        validate_output(kind, example)


@pytest.mark.parametrize("kind,decode", [("interaction", decode_interaction), ("event", decode_event)])
def test_input_examples_decode(kind, decode):
    for example in schema(kind)["examples"]:
        got = decode(orjson.dumps(example), now_ms=NOW)
        assert isinstance(got, dict), got
        assert isinstance(got["ts"], int)
