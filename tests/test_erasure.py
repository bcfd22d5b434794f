"""Erasure and ROI expiry through the Processor (streams.testing, no broker): an erasure request removes one person
from the state records, livepulse.leads and the ROI figures, is idempotent, and survives a restore; invalid
requests are dead-lettered; idle ROI ledgers expire from the tick with tombstones."""

from __future__ import annotations

import random

import orjson

from streams.forget import erasure_request
from streams.ingest.contracts import validate_output
from streams.partitioning import partition_for
from streams.processor import ROI_EXPIRY_INTERVAL_S, Processor, RawRecord
from streams.testing import run_records
from tests.test_roi import crm_records, hand_case, opp, settings_for
from tests.webinars import NOW_S
from tests.webinars import to_raw as kafka_records

S = settings_for("last_touch")
WALL = NOW_S + 86_400.0  # where run_records leaves the wall clock


def hand_run(retention_s: float = 900.0):
    """org-x's two events (u1 attends both, u2 the second, u3 a no-show of the first) and o1 naming u1."""
    arrivals = sorted(hand_case(), key=lambda a: a[1]["ts"])
    versions = [opp("o1", "created", 10, 5000, attendee_id="u1"), opp("o3", "created", 45, 7000, account_id="acme")]
    raw = kafka_records(arrivals, 1, rfc3339_rate=0) + crm_records(versions, 1, random.Random(0))
    return run_records(raw, S.model_copy(update={"retention_s": retention_s}), wall_start=NOW_S)


def erasure(value, offset: int = 0, partition: int = 0) -> RawRecord:
    if isinstance(value, dict):
        value = orjson.dumps(value)
    return RawRecord(S.topic_erasure, partition, offset, b"u1", value)


def mentions(state: dict[bytes, bytes], who: bytes) -> list[bytes]:
    """State keys whose key or value names `who` (as a key part or a JSON string)."""
    return [k for k, v in state.items() if k.endswith(b"/" + who) or b'"' + who + b'"' in v]


def test_erasure_removes_the_person_from_state_leads_and_roi_figures():
    got = hand_run()
    proc: Processor = got.processor
    assert mentions(got.state, b"u1"), "the changelog holds u1 before"
    before = dict(got.roi)
    assert (before["e1"]["leads"], before["e2"]["leads"], before["e2"]["opportunities"]) == (2, 2, 2)

    out = proc.process([erasure(erasure_request("u1", now_ms=int(WALL * 1000)))], WALL)
    got.add(out)
    assert not out.dead_letters
    assert not mentions(got.state, b"u1"), "nothing in the changelog names u1 any more"
    assert {(p, k) for p, k, v in out.state if v is None} >= {(0, b"e1/u1"), (0, b"e2/u1"), (0, b"#roi/org-x/p/u1")}
    assert sorted(out.lead_tombstones) == [("e1", "u1"), ("e2", "u1")]
    # The ROI figures published from now on: without u1's leads; o1 named u1, and o3's account (acme) attended
    # only in u1: neither is attributed any more.
    roi = {r["event_id"]: r for r in out.roi}
    assert (roi["e1"]["leads"], roi["e1"]["new_leads"]) == (1, 1)  # u3
    assert (roi["e2"]["leads"], roi["e2"]["new_leads"], roi["e2"]["opportunities"]) == (1, 1, 0)  # u2
    assert all("u1" not in ev.attendees for ev in proc.events.values())

    # A worker restored from the changelog holds the same figures and nothing of u1.
    fresh = Processor(S, partitions=1)
    fresh.restore(0, list(got.state.items()), WALL)
    assert fresh.roi_views == proc.roi_views
    assert all("u1" not in ev.attendees for ev in fresh.events.values())
    assert "u1" not in fresh.ledgers["org-x"].persons

    # The same request again (a replay after a crash, or sent twice): nothing left to do.
    again = proc.process([erasure(erasure_request("u1", now_ms=int(WALL * 1000)), offset=1)], WALL)
    assert not again.dead_letters and proc.counters.processed[S.topic_erasure] == 2
    assert again.state == [] and again.roi == [] and again.lead_tombstones == []


def test_leads_of_events_no_longer_held_are_erased_when_named():
    got = hand_run(retention_s=0.0)
    proc: Processor = got.processor
    proc.tick(WALL + 1, snapshots=False)  # past retention: the events are gone, their leads remain published
    assert proc.events == {}
    out = proc.process([erasure(erasure_request("u2", ("e2", "old-webinar")))], WALL + 2)
    # u2's person record still names e2; old-webinar is named by the request (all on the single partition).
    assert sorted(out.lead_tombstones) == [("e2", "u2"), ("old-webinar", "u2")]


def test_each_partition_erases_what_it_holds():
    got = hand_run()
    proc: Processor = got.processor
    proc.partitions = 4  # (the hand case lives on partition 0: copies on other partitions find nothing)
    request = erasure_request("u1", ("e1",))
    outs = [proc.process([erasure(request, partition=p)], WALL) for p in (1, 2, 3)]
    assert all(o.state == [] and o.roi == [] and not o.dead_letters for o in outs)
    # e1 is named: its lead is tombstoned by the copy on e1's home partition (of 4) only.
    home = partition_for(b"e1", 4)
    assert [o.lead_tombstones for o in outs] == [[("e1", "u1")] if p == home else [] for p in (1, 2, 3)]
    assert "u1" in proc.ledgers["org-x"].persons


def test_invalid_erasure_requests_are_dead_lettered():
    got = hand_run()
    proc: Processor = got.processor
    bad = [b"{", orjson.dumps({"attendee_id": "u1", "ts": 1}),  # no request id
           orjson.dumps({**erasure_request("u1"), "fact": "event"}),  # foreign fields: not an erasure request
           orjson.dumps({**erasure_request("u1"), "event_ids": ["has/slash"]}), None]
    out = proc.process([erasure(v, offset=i) for i, v in enumerate(bad)], WALL)
    assert [d["reason"] for d in (d for _, d in out.dead_letters)] == [
        "invalid_json", "schema_violation", "schema_violation", "schema_violation", "empty_value"]
    assert {d["schema"] for _, d in out.dead_letters} == {"erasure"}
    for _, dead in out.dead_letters:
        validate_output("dead_letter", dead)
    assert out.state == [] and "u1" in proc.ledgers["org-x"].persons


def test_idle_ledgers_expire_from_the_tick_with_tombstones():
    got = hand_run(retention_s=0.0)
    proc: Processor = got.processor
    p = proc.roi_params
    wall = WALL + 1
    got.add(proc.tick(wall, snapshots=False))  # the first tick of the ledger: its wall-clock mark
    assert set(proc.ledgers["org-x"].persons) == {"u1", "u2", "u3"}
    assert any(k.startswith(b"#roi/org-x/c/") for k in got.state), "the ledger's time is persisted"
    # Nothing arrives for org-x any more. Ticks within the expiry interval do nothing; later ones age the ledger.
    assert proc.tick(wall + ROI_EXPIRY_INTERVAL_S / 2, snapshots=False).state == []
    windows = (p.attribution_days_key_accounts + p.lateness_days + 2) * 86_400
    # A restart in between: the worker goes on from the persisted time record (downtime counts).
    restarted = Processor(S, partitions=1)
    restarted.restore(0, list(got.state.items()), wall + windows)
    got.add(restarted.tick(wall + windows, snapshots=False))
    assert restarted.ledgers["org-x"].events == {} and restarted.roi_views == {}
    assert not any(k.startswith(b"#roi/org-x/e/") for k in got.state)
    assert set(restarted.ledgers["org-x"].persons) == {"u1", "u2", "u3"}  # remembered lead_memory_days
    memory = (p.lead_memory_days + p.lateness_days + 2) * 86_400
    got.add(restarted.tick(wall + windows + memory, snapshots=False))
    assert "org-x" not in restarted.ledgers
    assert not any(k.startswith(b"#roi/") for k in got.state), "every ROI record tombstoned, the time record too"
