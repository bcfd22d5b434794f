"""Marketing ROI: the streaming ledger (streams.domain.roi through the Processor) against the ROI reference
(tests/reference_roi.py) on simulated organisers with several events and a CRM opportunity stream, plus
hand-written cases whose figures are worked out by hand."""

from __future__ import annotations

import random

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.outputs.metrics import exposition
from streams.partitioning import partition_for
from streams.processor import Processor, RawRecord
from streams.settings import Settings
from streams.testing import run_records
from tests.reference import Params, assert_same, reference
from tests.reference_roi import roi_reference
from tests.webinars import ACCOUNTS, NOW_S, SETTINGS, T0, Case, Shape, scenario
from tests.webinars import to_raw as kafka_records

DAY = 86_400_000
PARAMS = Params.from_settings(SETTINGS)
STAGE_PATHS = (("created",), ("created", "qualified"), ("created", "qualified", "won"), ("created", "lost"),
               ("created", "won"))


def opportunities(seed: int, results: dict, n: int = 60) -> list[dict]:
    """CRM opportunity versions around the events' ends: before them, days after (in and out of the 30- and
    90-day windows), several versions each, corrections, foreign currencies, exact replays."""
    rnd = random.Random(seed)
    ends = [r.summary["ended_at"] for r in results.values()]
    orgs = sorted({r.summary["organizer_id"] for r in results.values() if r.summary["organizer_id"]})
    people = [f"a{i}" for i in range(20)] + ["r0", "r1", "chat-only", "after-end", "nobody"]
    out = []
    for i in range(n):
        created = rnd.choice(ends) + rnd.randint(-2 * DAY, 120 * DAY)
        base = {"opportunity_id": f"opp-{i}"}
        org = rnd.choice(orgs + [None]) if orgs else None
        if org is not None:
            base["organizer_id"] = org
        who = rnd.random()
        if who < 0.5:
            base["attendee_id"] = rnd.choice(people)
        if who > 0.3:
            base["account_id"] = rnd.choice(ACCOUNTS + ("nobody-inc",))
        if "attendee_id" not in base and "account_id" not in base:
            base["account_id"] = "acme"
        currency = rnd.choice(("EUR", "EUR", "USD"))
        amount = float(rnd.randrange(1, 100) * 1000)
        ts = created
        for stage in rnd.choice(STAGE_PATHS):
            version = {**base, "stage": stage, "ts": ts, "amount": amount, "currency": currency}
            out.append(version)
            if rnd.random() < 0.15:
                out.append(dict(version))  # the connector sent it twice
            ts += rnd.randint(1, 60) * DAY
            amount = amount if rnd.random() < 0.7 else float(rnd.randrange(1, 100) * 1000)
        if rnd.random() < 0.1:  # a correction naming the account later
            out.append({**base, "account_id": rnd.choice(ACCOUNTS), "stage": "qualified", "ts": created + DAY,
                        "amount": amount, "currency": currency})
    rnd.shuffle(out)
    return out


def crm_records(versions: list[dict], partitions: int, rnd: random.Random) -> list[RawRecord]:
    """Opportunity records keyed by organizer_id (stay put), by opportunity id or unkeyed (forwarded)."""
    out, offsets = [], {}
    for v in versions:
        choice = rnd.random()
        key = (v.get("organizer_id") or "default").encode() if choice < 0.5 else (
            v["opportunity_id"].encode() if choice < 0.8 else None)
        part = partition_for(key, partitions) if key is not None else rnd.randrange(partitions)
        offsets[part] = offsets.get(part, -1) + 1
        out.append(RawRecord(SETTINGS.topic_opportunities, part, offsets[part], key, orjson.dumps(v)))
    return out


def roi_series(processor: Processor) -> dict:
    """The livepulse_roi_* samples of /metrics: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(exposition(processor).decode()):
        for sample in family.samples:
            if sample.name.startswith("livepulse_roi_"):
                labels = dict(sample.labels)
                currency = labels.pop("currency", None)
                key = tuple(sorted(labels.items())) + ((("currency", currency),) if currency else ())
                out[(sample.name, key)] = sample.value
    return out


def interleave(a: list, b: list, rnd: random.Random) -> list:
    out, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and rnd.random() < len(a) / (len(a) + len(b))):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


def settings_for(model: str) -> Settings:
    # The generated CRM stream is shuffled over months: a lateness that covers it keeps every figure exact.
    return SETTINGS.model_copy(update={"attribution_model": model, "max_future_skew_s": 400 * 86_400.0,
                                       "crm_lateness_days": 365})


@pytest.mark.parametrize("model", ["last_touch", "linear"])
@pytest.mark.parametrize("seed,partitions", [(1, 1), (2, 3), (3, 1), (4, 4)])
def test_roi_of_simulated_organisers_equals_the_reference(seed, partitions, model):
    rnd = random.Random(seed)
    shapes = {f"ev-{i}": Shape(attendees=18, duration_s=600, dup_rate=0.05) for i in range(5)}
    arrivals = scenario(seed, shapes, spread_s=20 * 86_400)  # events spread over 20 days
    expected = reference(arrivals, PARAMS)
    versions = opportunities(seed, expected)
    raw = interleave(kafka_records(arrivals, partitions, seed=seed), crm_records(versions, partitions, rnd), rnd)
    got = run_records(raw, settings_for(model), partitions=partitions, wall_start=NOW_S, batch_size=97)
    want = roi_reference(expected, versions, model=model)
    assert not got.dead_letters
    assert set(got.roi) == set(want)
    for event_id, record in want.items():
        assert_same(got.roi[event_id], record, f"roi[{event_id}]")
    shown = roi_series(got.processor)
    for event_id, r in want.items():
        ids = (("event_id", event_id), ("organizer_id", r["organizer_id"]))  # + currency: sorted by roi_series
        assert_same(shown.pop(("livepulse_roi_new_leads", ids)), float(r["new_leads"]), "new leads gauge")
        assert_same(shown.pop(("livepulse_roi_opportunities", ids)), r["opportunities"], "opportunities gauge")
        if r["roi"] is not None:
            assert_same(shown.pop(("livepulse_roi_ratio", ids)), r["roi"], "roi gauge")
        cur = (("currency", r["currency"] or "XXX"),)
        if r["cost"] is not None:
            assert_same(shown.pop(("livepulse_roi_cost", ids + cur)), float(r["cost"]), "cost gauge")
        if r["cost_per_new_lead"] is not None:
            assert_same(shown.pop(("livepulse_roi_cost_per_new_lead", ids + cur)), r["cost_per_new_lead"], "CPL")
        for name, amounts in (("livepulse_roi_pipeline_amount", r["pipeline"]), ("livepulse_roi_won_amount", r["won"])):
            for c, amount in amounts.items():
                assert_same(shown.pop((name, ids + (("currency", c),))), amount, name)
        for name, field in (("livepulse_roi_registrations", "registrations"),
                            ("livepulse_roi_attendees", "unique_attendees"), ("livepulse_roi_mqls", "mqls")):
            assert_same(shown.pop((name, ids)), float(r[field]), name)
        days = max(r["attribution_days"], r["attribution_days_key_accounts"])
        assert_same(shown.pop(("livepulse_roi_attribution_end_timestamp_seconds", ids)),
                    r["ended_at"] / 1000 + days * 86_400, "attribution end")
        assert shown.pop(("livepulse_roi_provisional", ids)) in (0.0, 1.0)
    assert not shown, f"series without a reference value: {sorted(shown)[:5]}"
    orgs = {r["organizer_id"] for r in want.values()}
    assert len(orgs) >= 2, "several organisers"
    assert sum(r["opportunities"] for r in want.values()) > 0, "some opportunities are attributed"
    assert any(r["won"] for r in want.values()), "some revenue is won within a window"
    assert any(r["new_leads"] < r["leads"] for r in want.values()), "returning people are not new leads"


def test_replayed_facts_and_opportunities_change_nothing():
    shapes = {f"ev-{i}": Shape(attendees=12, duration_s=600) for i in range(3)}
    arrivals = scenario(9, shapes, spread_s=5 * 86_400)
    expected = reference(arrivals, PARAMS)
    versions = opportunities(9, expected, n=30)
    raw = kafka_records(arrivals, 1) + crm_records(versions, 1, random.Random(9))
    s = settings_for("last_touch")
    got = run_records(raw, s, wall_start=NOW_S)
    proc: Processor = got.processor
    before = {e: dict(r) for e, r in proc.roi_views.items()}
    # Everything the ROI side consumed, again (a restart before the commit): no record changes, none is emitted.
    again = [RawRecord(s.topic_roi_facts, 0, i, k, v) for i, (k, v) in enumerate(got.roi_facts)]
    again += [r for r in raw if r.topic == s.topic_opportunities]
    out = proc.process(again, NOW_S + 90_000.0)
    assert out.roi == [] and proc.roi_views == before
    # A worker restored from the persisted state holds the same figures and publishes nothing new.
    fresh = Processor(s, partitions=1)
    keys = [(k, v) for k, v in got.state.items() if k.startswith(b"#roi/")]
    fresh.restore(0, keys, NOW_S + 90_000.0)
    assert fresh.roi_views == before
    assert fresh.process(again, NOW_S + 90_000.0).roi == []


def hand_case() -> list[tuple[str, dict]]:
    """Two events of org-x: E1 (cost 1000 EUR, key account acme) then E2 (cost 2000 EUR); u1 attends both,
    u2 only E2 (from globex), u3 registers for E1 and never comes."""
    c = Case()
    for e, at, cost in (("e1", 0, 1000), ("e2", 86_400, 2000)):
        c.life("scheduled", at - 3600, event_id=e, organizer_id="org-x", cost=cost, currency="EUR",
               key_accounts=["acme"])
        c.life("started", at, event_id=e)
        c.i("u1", "join", at + 10, event_id=e, account_id="acme")
        c.i("u1", "leave", at + 1800, event_id=e)
        c.life("ended", at + 3600, event_id=e)
    c.i("u3", "registration", -7200, event_id="e1")
    c.i("u2", "join", 86_400 + 20, event_id="e2", account_id="globex")
    c.i("u2", "leave", 86_400 + 600, event_id="e2")
    return c.arrivals


E2_END = T0 + (86_400 + 3600) * 1000


def run_hand(versions: list[dict], model: str = "last_touch") -> dict:
    arrivals = sorted(hand_case(), key=lambda a: a[1]["ts"])
    raw = kafka_records(arrivals, 1, rfc3339_rate=0) + crm_records(versions, 1, random.Random(0))
    return run_records(raw, settings_for(model), wall_start=NOW_S).roi


def opp(oid: str, stage: str, days_after_e2: float, amount: float, currency: str = "EUR", **who) -> dict:
    return {"opportunity_id": oid, "organizer_id": "org-x", "stage": stage,
            "ts": E2_END + int(days_after_e2 * DAY), "amount": amount, "currency": currency, **who}


def test_hand_worked_figures():
    roi = run_hand([
        opp("o1", "created", 10, 5000, attendee_id="u1"),
        opp("o1", "won", 20, 6000, attendee_id="u1"),  # an update of the same opportunity
        opp("o2", "created", 40, 9000, account_id="globex"),  # outside E2's 30-day window (globex not key)
        opp("o3", "created", 45, 7000, account_id="acme"),  # acme is a key account: 90-day window
        opp("o4", "won", 5, 800, "USD", attendee_id="u2"),  # another currency: reported, not in the ROI
    ])
    e1, e2 = roi["e1"], roi["e2"]
    # new leads: E1 has u1 and u3; E2 has u1 (returning) and u2
    assert (e1["leads"], e1["new_leads"], e1["cost_per_new_lead"]) == (2, 2, 500.0)
    assert (e2["leads"], e2["new_leads"], e2["cost_per_new_lead"]) == (2, 1, 2000.0)
    # last touch: o1 and o3 go to E2 (the last event attended before creation), o4 to E2, o2 nowhere
    assert e2["opportunities"] == 3 and e1["opportunities"] == 0
    assert e2["pipeline"] == {"EUR": 13000.0, "USD": 800.0} and e2["won"] == {"EUR": 6000.0, "USD": 800.0}
    assert e2["roi"] == (6000 - 2000) / 2000 and e1["roi"] == -1.0


def test_linear_attribution_splits_over_every_touching_event():
    roi = run_hand([opp("o1", "won", 10, 5000, attendee_id="u1")], model="linear")
    assert roi["e1"]["opportunities"] == roi["e2"]["opportunities"] == 0.5
    assert roi["e1"]["won"] == roi["e2"]["won"] == {"EUR": 2500.0}


def test_won_after_the_window_is_pipeline_but_not_won():
    roi = run_hand([opp("o1", "created", 10, 5000, attendee_id="u2"), opp("o1", "won", 31, 5000, attendee_id="u2")])
    assert roi["e2"]["pipeline"] == {"EUR": 5000.0} and roi["e2"]["won"] == {}


def test_event_windows_from_metadata_override_the_defaults():
    arrivals = [(k, {**r, "attribution_days": 60} if r.get("type") == "scheduled" else r) for k, r in hand_case()]
    arrivals.sort(key=lambda a: a[1]["ts"])
    raw = kafka_records(arrivals, 1, rfc3339_rate=0) + crm_records(
        [opp("o2", "created", 40, 9000, account_id="globex")], 1, random.Random(0))
    roi = run_records(raw, settings_for("last_touch"), wall_start=NOW_S).roi
    assert roi["e2"]["opportunities"] == 1 and roi["e2"]["attribution_days"] == 60


def test_invalid_opportunities_are_dead_lettered_with_a_reason():
    bad = [b"{", orjson.dumps({"opportunity_id": "x", "stage": "won", "ts": T0}),  # neither attendee nor account
           orjson.dumps({"opportunity_id": "x", "stage": "signed", "ts": T0, "account_id": "a"})]
    raw = [RawRecord(SETTINGS.topic_opportunities, 0, i, None, v) for i, v in enumerate(bad)]
    got = run_records(raw, SETTINGS, wall_start=NOW_S)
    assert [d["reason"] for d in got.dead_letters] == ["invalid_json", "schema_violation", "schema_violation"]
    assert {d["schema"] for d in got.dead_letters} == {"opportunity"}


def test_ledger_forgets_what_can_no_longer_change_a_figure():
    roi = run_hand([opp("o1", "created", 10, 5000, attendee_id="u1")])
    assert roi["e2"]["opportunities"] == 1
    arrivals = sorted(hand_case(), key=lambda a: a[1]["ts"])
    late = opp("late", "created", 400, 1, account_id="acme")  # a year later: the events are past every window
    s = settings_for("last_touch").model_copy(update={"crm_lateness_days": 30})
    raw = kafka_records(arrivals, 1, rfc3339_rate=0) + crm_records([opp("o1", "created", 10, 5000,
                                                                        attendee_id="u1"), late], 1, random.Random(0))
    got = run_records(raw, s, wall_start=NOW_S + 400 * 86_400)
    ledger = got.processor.ledgers["org-x"]
    assert ledger.events == {} and got.processor.roi_views == {}
    assert set(ledger.opportunities) == {"late"}, "opportunities older than every window are dropped"
    assert all(not p["events"] for p in ledger.persons.values()), "persons keep only their first event"
    assert not any(k.startswith(b"#roi/org-x/e/") for k in got.state), "and their state records are deleted"


def test_roi_can_be_turned_off():
    arrivals = sorted(hand_case(), key=lambda a: a[1]["ts"])
    s = settings_for("last_touch").model_copy(update={"roi_enabled": False})
    got = run_records(kafka_records(arrivals, 1, rfc3339_rate=0), s, wall_start=NOW_S)
    assert set(got.summaries) == {"e1", "e2"} and got.roi_facts == [] and got.roi == {}
    assert got.processor.ledgers == {}


def test_opportunity_and_person_caps_dead_letter_what_they_keep_out():
    s = settings_for("last_touch").model_copy(update={"max_opportunities_per_organizer": 3,
                                                      "max_opportunities_per_worker": 4})
    versions = [opp(f"o{i}", "created", 1, 10, account_id="acme") for i in range(5)]
    versions += [dict(opp(f"p{i}", "created", 1, 10, account_id="acme"), organizer_id="org-y") for i in range(3)]
    versions.append(opp("o0", "won", 2, 10, account_id="acme"))  # a new version of a held one: applied
    got = run_records(crm_records(versions, 1, random.Random(0)), s, wall_start=NOW_S, finish=False)
    proc: Processor = got.processor
    assert sorted(proc.ledgers["org-x"].opportunities) == ["o0", "o1", "o2"]
    assert sorted(proc.ledgers["org-y"].opportunities) == ["p0"]  # the worker's 4th
    assert proc.ledgers["org-x"].opportunities["o0"]["won"] is not None
    assert proc.counters.capped == {"opportunities": 2, "worker_opportunities": 2}
    assert [d["reason"] for d in got.dead_letters] == ["cap_exceeded"] * 4
    assert "LIVEPULSE_MAX_OPPORTUNITIES_PER_ORGANIZER" in got.dead_letters[0]["error"]
    assert proc.roi_budgets[0].held == 4


def test_persons_cap_leaves_out_new_persons_of_a_lead_fact():
    s = settings_for("last_touch").model_copy(update={"max_persons_per_organizer": 2})
    arrivals = sorted(hand_case(), key=lambda a: a[1]["ts"])  # u1, u2, u3: three persons of org-x
    got = run_records(kafka_records(arrivals, 1, rfc3339_rate=0), s, wall_start=NOW_S)
    ledger = got.processor.ledgers["org-x"]
    assert len(ledger.persons) == 2
    letters = [d for d in got.dead_letters if d["reason"] == "cap_exceeded"]
    assert letters and all(d["schema"] == "roi_fact" for d in letters)
    assert "applied without 1 leads" in letters[0]["error"]
    assert got.processor.counters.capped["persons"] == len(letters)


def test_a_batch_recomputes_only_what_it_changed():
    """One more opportunity for an organiser holding 2,000: one attribution computed, one event re-figured."""
    roi_settings = settings_for("last_touch")
    arrivals = sorted(hand_case(), key=lambda a: a[1]["ts"])
    many = [opp(f"o{i}", "created", 1 + i / 1000, 100, attendee_id="u1") for i in range(2000)]
    got = run_records(kafka_records(arrivals, 1, rfc3339_rate=0) + crm_records(many, 1, random.Random(0)),
                      roi_settings, wall_start=NOW_S)
    proc: Processor = got.processor
    ledger = proc.ledgers["org-x"]
    assert proc.roi_views["e2"]["opportunities"] == 2000
    calls = {"attribute": 0, "figures": 0}
    attribute, figures = ledger._attribute, ledger._figures

    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper

    ledger._attribute, ledger._figures = counted("attribute", attribute), counted("figures", figures)
    one = crm_records([opp("extra", "won", 3, 50, attendee_id="u1")], 1, random.Random(0))
    out = proc.process(one, NOW_S + 90_000.0)
    assert calls == {"attribute": 1, "figures": 1}
    (record,) = out.roi
    assert record["event_id"] == "e2" and record["opportunities"] == 2001
    assert record["pipeline"] == {"EUR": 2000 * 100.0 + 50.0} and record["won"] == {"EUR": 50.0}
    # and a ledger rebuilt from the persisted state has the very same figures
    fresh = Processor(roi_settings, partitions=1)
    state = dict(got.state)
    for _, key, value in out.state:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    fresh.restore(0, [(k, v) for k, v in state.items() if k.startswith(b"#roi/")], NOW_S + 90_000.0)
    assert fresh.ledgers["org-x"].figures() == {e: ev["roi"] for e, ev in ledger.events.items()}
