"""docs/gateway.md matches the gateway: its settings with their defaults, its metrics, its reason codes."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.gateway.metrics import GatewayMetrics
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "gateway.md").read_text()
SOURCES = "".join(p.read_text() for p in (ROOT / "streams" / "gateway").glob("*.py"))


def test_settings_table_has_every_gateway_setting_with_its_default():
    rows = dict(re.findall(r"^\| `(LIVEPULSE_GATEWAY_[A-Z_]+)` \| `([^`]*)` \|", DOC, re.MULTILINE))
    fields = {f"LIVEPULSE_{n.upper()}": f for n, f in Settings.model_fields.items() if n.startswith("gateway_")}
    assert set(rows) == set(fields)
    for name, field in fields.items():
        default = field.default_factory() if field.default_factory else field.default
        if hasattr(default, "get_secret_value"):
            assert rows[name] == "empty" and not default.get_secret_value()
        elif isinstance(default, bool):
            assert rows[name] == str(default).lower(), name
        else:
            assert rows[name] == str(default), name


def test_every_metric_is_documented():
    metrics = GatewayMetrics()
    metrics.requests.labels("/health", "200").inc()
    metrics.rejects.labels("too_large").inc()
    metrics.records.labels("interaction").inc()
    metrics.zoom_event("webinar.started", "mapped")
    names = {f.name for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    names = {n.removesuffix("_total") for n in names if not n.endswith("_created")}  # (off in `livepulse gateway`)
    documented = {n.removesuffix("_total") for n in re.findall(r"^\| `(livepulse_gateway_\w+)`", DOC, re.MULTILINE)}
    assert names == documented


def test_every_request_reason_code_is_documented():
    codes = set(re.findall(r'Refused\(\d{3}, "([a-z_]+)"', SOURCES)) | set(
        re.findall(r'Unavailable\("([a-z_]+)"', SOURCES))
    assert codes, "no reason codes found in the sources"
    missing = sorted(c for c in codes if f"`{c}`" not in DOC and not re.search(rf"\b{c}\b", DOC))
    assert not missing, missing
