"""The JSON-Schema contracts of every topic, loaded once and compiled with jsonschema-rs (draft 2020-12).

The schemas live in the repository's `schemas/` folder (the wheel carries a copy as `streams/_schemas`); the
schema is the single source of truth for what a valid record is: no hand-written validation repeats it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jsonschema_rs
import orjson

KINDS = ("interaction", "event", "opportunity", "minute", "live", "summary", "lead", "roi", "roi_fact", "dead_letter",
         "erasure")


def schema_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_schemas", here.parent / "schemas"):
        if (candidate / "interaction.json").is_file():
            return candidate
    raise FileNotFoundError(f"JSON schemas not found next to {here} (expected schemas/ or streams/_schemas)")


@functools.cache
def schema(kind: str) -> dict:
    if kind not in KINDS:
        raise KeyError(f"unknown message kind {kind!r}; one of {', '.join(KINDS)}")
    return orjson.loads((schema_dir() / f"{kind}.json").read_bytes())


@functools.cache
def validator(kind: str) -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator(schema(kind), validate_formats=True)


class ContractError(ValueError):
    """A message does not follow its topic's contract."""


def first_error(kind: str, obj: object) -> tuple[list, str] | None:
    """(JSON path as a list, message) of the first violation, or None when `obj` is valid."""
    for error in validator(kind).iter_errors(obj):
        return list(error.instance_path), error.message
    return None


def json_path(path: list) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def validate_output(kind: str, obj: object) -> None:
    """Raise ContractError naming the failing path when `obj` does not validate (used on real outputs in tests)."""
    found = first_error(kind, obj)
    if found is not None:
        path, message = found
        raise ContractError(f"{kind} {json_path(path)}: {message}")
