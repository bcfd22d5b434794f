"""A simulated webinar delivered as signed Zoom webhooks -- reordered, retried -- verified, mapped and processed
gives the same summary and leads as the same webinar sent as interactions (streams/simulate/zoom.py)."""

from __future__ import annotations

import orjson
import pytest

from streams.gateway.zoom import ZoomRejected, map_delivery, verify
from streams.simulate.scenario import ScenarioConfig, SimRecord, generate, generate_many
from streams.simulate.zoom import zoom_webinar
from streams.testing import run_records
from tests.reference import assert_same
from tests.test_reference_equality import SETTINGS, to_raw
from tests.webinars import NOW_S

SECRET = "sim-secret"
KEY = b"sim-id-key"


def mapped_records(webinar) -> tuple[list[SimRecord], dict[str, set[str]]]:
    """What the gateway would produce of the deliveries (in their order), and the Zoom attendee ids of each
    simulated attendee."""
    out, people = [], {}
    for d in webinar.deliveries:
        ts = d.headers["x-zm-request-timestamp"]
        verify(d.body, d.headers["x-zm-signature"], ts, [SECRET], now_s=int(ts))
        got = map_delivery(orjson.loads(d.body), id_key=KEY)
        assert got.mapped
        out += [SimRecord("events", r["event_id"].encode(), orjson.dumps(r), r["ts"]) for r in got.events]
        out += [SimRecord("interactions", r["event_id"].encode(), orjson.dumps(r), r["ts"]) for r in got.interactions]
        for r in got.interactions:
            people.setdefault(d.attendee, set()).add(r["attendee_id"])
    return out, people


def run(records: list[SimRecord]):
    return run_records(to_raw(records, 2), SETTINGS, batch_size=100, partitions=2, wall_start=NOW_S)


@pytest.mark.parametrize("seed", [3, 4])
def test_zoom_webhooks_give_the_summary_and_leads_of_the_same_webinar(seed):
    records = generate(ScenarioConfig(seed=seed, registrants=120, duration_s=1200))
    webinar = zoom_webinar(records, secret=SECRET, seed=seed, retry_rate=0.2, reorder_rate=0.3, max_delay_s=20)
    about_people = [d for d in webinar.deliveries if d.attendee is not None]
    retries = len(about_people) - len({d.body for d in about_people})  # (a retried lifecycle record is no duplicate)
    assert retries > 10
    assert [d.ts for d in webinar.deliveries] != sorted(d.ts for d in webinar.deliveries), "some are reordered"
    mapped, people = mapped_records(webinar)
    assert all(len(ids) == 1 for ids in people.values()), "one attendee id per person"
    zoom_id = {sim: next(iter(ids)) for sim, ids in people.items()}
    assert len(set(zoom_id.values())) == len(zoom_id), "distinct people, distinct attendee ids"

    via_zoom, direct = run(mapped), run(webinar.reference)
    assert via_zoom.processor.counters.duplicates == retries
    assert not via_zoom.dead_letters and not direct.dead_letters
    (event_id,) = webinar.event_ids.values()
    assert set(via_zoom.summaries) == set(direct.summaries) == {event_id}
    summary = via_zoom.summaries[event_id]
    assert_same(summary, direct.summaries[event_id])
    assert summary["unique_attendees"] > 30 and summary["registrations"] == 120
    assert summary["interactions"]["chat"] > 0 and summary["interactions"]["heartbeat"] == 0
    expected = sorted(({**x, "attendee_id": zoom_id[x["attendee_id"]]} for x in direct.leads),
                      key=lambda x: x["attendee_id"])
    assert_same(sorted(via_zoom.leads, key=lambda x: x["attendee_id"]), expected)


def test_join_leave_presence_keeps_silent_attendees_in_the_room():
    """Without heartbeats an attendee stays until their leave: the dwell is close to the heartbeat webinar's."""
    records = generate(ScenarioConfig(seed=5, registrants=80, duration_s=900, vanish_rate=0.0,
                                      duplicate_rate=0.0, malformed_rate=0.0))
    webinar = zoom_webinar(records, secret=SECRET, seed=5)
    heartbeats = run(records).summaries["webinar-5"]
    zoom = run(mapped_records(webinar)[0]).summaries[webinar.event_ids["webinar-5"]]
    assert zoom["unique_attendees"] == heartbeats["unique_attendees"]
    assert abs(zoom["total_dwell_seconds"] - heartbeats["total_dwell_seconds"]) < 0.05 * heartbeats[
        "total_dwell_seconds"]


def test_deterministic_by_seed_and_zoom_shaped():
    records = generate_many([ScenarioConfig(seed=8, event_id=f"w-{i}", registrants=30, duration_s=600)
                             for i in range(2)])
    a = zoom_webinar(records, secret=SECRET, seed=1, retry_rate=0.1, reorder_rate=0.2)
    b = zoom_webinar(records, secret=SECRET, seed=1, retry_rate=0.1, reorder_rate=0.2)
    c = zoom_webinar(records, secret=SECRET, seed=2, retry_rate=0.1, reorder_rate=0.2)
    assert a == b and a.deliveries != c.deliveries
    assert len(a.event_ids) == 2 and len(set(a.event_ids.values())) == 2
    events = {orjson.loads(d.body)["event"] for d in a.deliveries}
    assert events == {"webinar.started", "webinar.ended", "webinar.registration_created",
                      "webinar.participant_joined", "webinar.participant_left", "webinar.chat_message_sent"}
    assert all(d.body.isascii() for d in a.deliveries), "non-ASCII escaped as Zoom does"
    assert any(b"\\ud83d" in d.body for d in a.deliveries), "an emoji as a surrogate pair"
    ids = {orjson.loads(d.body)["event"]: type(orjson.loads(d.body)["payload"]["object"]["id"]) for d in a.deliveries}
    assert ids["webinar.participant_joined"] is str and ids["webinar.registration_created"] is int
    for d in a.deliveries[:50]:  # signed with the secret and no other
        ts = d.headers["x-zm-request-timestamp"]
        with pytest.raises(ZoomRejected):
            verify(d.body, d.headers["x-zm-signature"], ts, ["another"], now_s=int(ts))
