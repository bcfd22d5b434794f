"""Figures per registration channel: the row each person counts in, the cap, and the published shape."""

from __future__ import annotations

from streams.domain.channels import ChannelTally, channel_of
from streams.ingest.contracts import validate_output
from streams.processor import Processor
from streams.simulate.scenario import ScenarioConfig, generate
from tests.test_reference_equality import to_raw
from tests.webinars import NOW_S, SETTINGS


def test_the_row_of_a_person():
    assert channel_of(True, "partner") == "partner"
    assert channel_of(True, None) == channel_of(True, "") == "unknown"
    assert channel_of(False, None) == channel_of(False, "email") == "walk_in", "a channel only counts with a registration"


def tally(*people) -> ChannelTally:
    t = ChannelTally()
    for p in people:
        t.add(*p)
    return t


def test_sums_and_ratios_of_one_channel():
    rows = tally((True, "email", True, 60_000, 80.0, "A"), (True, "email", True, 30_000, 40.0, "C"),
                 (True, "email", False, 0, 0.0, "D"), (False, None, True, 10_000, 10.0, "D")).figures(20)
    email, walk_in = rows
    assert email == {"channel": "email", "registrations": 3, "attendees": 2, "attendance_rate": 2 / 3,
                     "avg_dwell_seconds": 45.0, "engagement_score": 60.0,
                     "leads_by_grade": {"A": 1, "B": 0, "C": 1, "D": 1}, "mqls": 1, "cost": None,
                     "cost_per_registration": None, "cost_per_attendee": None, "cost_per_mql": None}
    assert walk_in["channel"] == "walk_in" and walk_in["registrations"] == 0 and walk_in["attendance_rate"] is None
    assert walk_in["attendees"] == 1 and walk_in["avg_dwell_seconds"] == 10.0


def test_cost_per_registration_attendee_and_mql_of_each_channel():
    t = tally((True, "email", True, 60_000, 80.0, "A"), (True, "email", False, 0, 0.0, "D"),
              (True, "paid_social", True, 1000, 5.0, "D"))
    rows = {r["channel"]: r for r in t.figures(20, {"email": 600, "paid_social": 1200, "partner": 800,
                                                     "walk_in": 50})}
    email, paid, partner = rows["email"], rows["paid_social"], rows["partner"]
    assert (email["cost"], email["cost_per_registration"], email["cost_per_attendee"], email["cost_per_mql"]) == (
        600, 300.0, 600.0, 600.0)
    assert (paid["cost_per_registration"], paid["cost_per_attendee"], paid["cost_per_mql"]) == (1200.0, 1200.0, None)
    assert partner["registrations"] == 0 and partner["cost"] == 800 and partner["cost_per_registration"] is None, \
        "a channel with a cost but nobody through it yet still shows what it cost"
    assert rows["walk_in"]["cost"] == 50 and rows["walk_in"]["cost_per_attendee"] is None
    assert {r["channel"] for r in t.figures(1, {"paid_social": 1})} == {"paid_social", "other"}, \
        "a channel with a cost is kept before one with more registrations"
    assert t.figures(20, ["email"]) == t.figures(20), "costs that are not an object count as none"


def test_a_channel_of_no_shows_only_averages_to_zero():
    (row,) = tally((True, "paid", False, 0, 0.0, "D")).figures(20)
    assert (row["attendees"], row["attendance_rate"], row["avg_dwell_seconds"], row["engagement_score"]) == (0, 0.0,
                                                                                                           0.0, 0.0)


def test_channels_beyond_the_cap_fold_into_other_fewest_registrations_first_ties_by_name():
    people = [(True, "email", True, 1000, 50.0, "B")] * 3 + [(True, "social", False, 0, 0.0, "D")] * 2
    people += [(True, "partner", True, 2000, 70.0, "A")] * 2 + [(True, "other", True, 0, 0.0, "D")]
    people += [(True, None, False, 0, 0.0, "D"), (False, None, True, 0, 0.0, "D")]
    t = tally(*people)
    rows = {r["channel"]: r for r in t.figures(2)}
    assert set(rows) == {"email", "partner", "other", "unknown", "walk_in"}, "partner beats social by name"
    assert rows["other"]["registrations"] == 3 and rows["other"]["attendees"] == 1
    assert rows["other"]["leads_by_grade"] == {"A": 0, "B": 0, "C": 0, "D": 3}
    assert t.figures(2) == list(rows.values()), "folding leaves the tally as it was"
    assert [r["channel"] for r in t.figures(20)] == ["email", "other", "partner", "social", "unknown", "walk_in"]
    assert {r["channel"] for r in t.figures(1)} == {"email", "other", "unknown", "walk_in"}


def test_snapshots_and_the_summary_carry_the_channels_in_their_schema():
    raw = to_raw(generate(ScenarioConfig(seed=3, registrants=60, duration_s=600)))
    proc, live, summaries = Processor(SETTINGS, partitions=1), [], []
    for i in range(0, len(raw), 100):
        summaries += proc.process(raw[i:i + 100], NOW_S).summaries
        tick = proc.tick(NOW_S, snapshots=True)
        live, summaries = live + tick.live, summaries + tick.summaries
    summaries += proc.tick(NOW_S + 86_400.0, snapshots=False).summaries
    assert live and len(summaries) == 1
    for snapshot in live:
        validate_output("live", snapshot)
        assert sum(r["attendees"] for r in snapshot["channels"]) == snapshot["unique_attendees"]
    (summary,) = summaries
    validate_output("summary", summary)
    channels = {r["channel"] for r in summary["channels"]}
    assert {"email", "walk_in"} <= channels and len(channels) >= 5
    assert sum(r["registrations"] for r in summary["channels"]) == summary["registrations"] == 60
    assert sum(r["mqls"] for r in summary["channels"]) == summary["mqls"]
