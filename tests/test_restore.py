"""A worker that takes over a partition exports its events at once, including events already summarised."""

from __future__ import annotations

from streams.outputs.metrics import exposition
from streams.processor import Processor
from streams.testing import run_records
from tests.webinars import NOW_S, SETTINGS, Shape, scenario
from tests.webinars import to_raw as kafka_records


def test_takeover_exports_summarised_events_with_their_final_figures():
    got = run_records(kafka_records(scenario(3, {"done": Shape()}), 1), SETTINGS, wall_start=NOW_S)
    summary = got.summaries["done"]
    heir = Processor(SETTINGS, partitions=1)
    heir.restore(0, list(got.state.items()), NOW_S + 86_400.0)
    text = exposition(heir).decode()
    assert f'livepulse_unique_attendees{{event_id="done"}} {float(summary["unique_attendees"])}' in text
    assert f'livepulse_attendees_peak{{event_id="done"}} {float(summary["attendees_peak"])}' in text
    assert heir.views["done"]["engagement_score"] == summary["engagement_score"]
