"""The bench judges each of LivePulse's performance targets from a run's result, and says which it did not measure."""

from __future__ import annotations

from streams.bench.cli import TARGETS, _target_lines, median_round, target_verdicts


def result(*, livepulse=60_000.0, ceiling=240_000.0, peer_a=2_000.0, peer_b=16_000.0, p99=0.8, rate=20_000.0,
           attendees=1_000_000, rss=950 << 20, rss_met=True, restart=20.0) -> dict:
    return {
        "contestants": {"livepulse": {"records_per_s": livepulse}, "ceiling": {"records_per_s": ceiling},
                        "peerA": {"records_per_s": peer_a}, "peerB": {"records_per_s": peer_b}},
        "freshness": {"target_rate": rate, "snapshot_interval_s": 1.0, "metrics": {"p99_s": p99}},
        "attendees": {"attendees": attendees, "present_attendees": attendees, "rss_bytes": rss,
                      "rss_target_met": rss_met, "recovery": {"processing_s": restart}},
    }


def test_each_target_is_judged_against_its_bound():
    v = target_verdicts(result())
    assert list(v) == [name for name, _ in TARGETS]
    assert {n: x["met"] for n, x in v.items()} == {"ceiling": False, "peerA": True, "peerB": True,
                                                   "freshness": True, "memory": True, "restart": True}
    assert v["ceiling"]["value"] == 0.25 and v["peerA"]["value"] == 30.0
    assert _target_lines(v) == ["targets: 5 of 6 met (missed: ceiling)"]
    # each bound, just inside and just outside
    assert target_verdicts(result(ceiling=120_000.0))["ceiling"]["met"] is True
    assert target_verdicts(result(peer_a=2_401.0))["peerA"]["met"] is False
    assert target_verdicts(result(peer_b=60_000.0))["peerB"]["met"] is False
    assert target_verdicts(result(p99=1.0))["freshness"]["met"] is True
    assert target_verdicts(result(p99=1.01))["freshness"]["met"] is False
    assert target_verdicts(result(rss_met=False))["memory"]["met"] is False
    assert target_verdicts(result(restart=30.5))["restart"]["met"] is False


def test_what_a_run_did_not_measure_at_the_targets_sizes_is_not_judged():
    quick = target_verdicts(result(rate=2_000.0, attendees=20_000, rss_met=None))
    assert quick["freshness"]["met"] is None and quick["memory"]["met"] is None and quick["restart"]["met"] is None
    assert quick["peerA"]["met"] is True
    assert _target_lines(quick) == [("targets: 2 of 3 met (missed: ceiling); not measured at the targets' sizes: "
                                     "freshness, memory, restart")]
    skipped = target_verdicts({"contestants": {"livepulse": {"skipped": "--skip"}}, "freshness": {"skipped": "--skip"},
                               "attendees": {"skipped": "--skip"}})
    assert all(v["met"] is None for v in skipped.values())
    assert _target_lines(skipped) == ["targets: none measured at the targets' sizes in this run"]


def test_median_round_reports_the_middle_round_with_every_rate():
    rounds = [{"records_per_s": 50_000.0, "seconds": 5.0}, {"records_per_s": 70_000.0, "seconds": 3.6},
              {"records_per_s": 60_000.0, "seconds": 4.2}]
    chosen = median_round(rounds)
    assert chosen["records_per_s"] == 60_000.0 and chosen["seconds"] == 4.2  # one round's figures, consistent
    assert chosen["rounds_records_per_s"] == [50_000.0, 70_000.0, 60_000.0]  # in round order
    assert "rounds_records_per_s" not in rounds[2]  # the rounds themselves stay as measured
    # an even count takes the lower middle (never flattering); a failed round is listed but not chosen
    assert median_round(rounds[:2])["records_per_s"] == 50_000.0
    failed = {"timed_out": True, "error": None}
    assert median_round([failed, rounds[1]])["rounds_records_per_s"] == [None, 70_000.0]
    assert median_round([failed, rounds[1]])["records_per_s"] == 70_000.0
    assert median_round([failed]) is failed  # nothing measured: the round's own report (its error)
