"""Every record LivePulse writes fits Kafka's default max.message.bytes (1 MiB), also with the largest state the
caps allow: ids, polls and accounts of the longest kind, each character one that JSON escapes (6 bytes)."""

from __future__ import annotations

import base64

import orjson

from streams.ingest.contracts import validator
from streams.outputs import fit
from streams.processor import Processor
from streams.settings import Settings
from streams.testing import raw
from tests.webinars import NOW_S, T0

LIMIT = Settings().max_message_bytes
ESC = "\x01"  # orjson writes it as \u0001: the most bytes one character of a JSON string can take


def long_text(n: int, tag: str) -> str:
    return (tag + ESC * n)[:n]


def settings(**over) -> Settings:
    return Settings(**{"max_record_bytes": 1 << 20, "max_future_skew_s": 86_400.0 * 400, **over})


def assert_fits(out, proc: Processor | None = None) -> int:
    """Every state record and output of `out` fits; returns the largest state record."""
    largest = 0
    for _, key, value in out.state:
        size = fit.record_bytes(key, value, [("e", b"1" * 20)])  # (with an epoch header, as the worker sends)
        assert size <= LIMIT, f"state record {key[:60]!r}: {size} bytes"
        largest = max(largest, size)
    for key, letter in out.dead_letters:
        _, value = fit.dead_letter(key, letter, LIMIT)
        assert fit.record_bytes(key, value) <= LIMIT
    for records in (out.minutes, out.summaries, out.live, out.roi, out.leads):
        for record in records:
            assert fit.record_bytes(b"k" * 256, orjson.dumps(record)) <= LIMIT
    for key, value in out.roi_facts + out.rekeyed:
        assert fit.record_bytes(key, value) <= LIMIT
    return largest


def test_an_attendee_with_every_cap_reached_fits():
    s = settings(max_interactions_per_attendee=20_000)
    proc = Processor(s, partitions=1)
    ti = s.topic_interactions
    aid = long_text(256, "a")
    recs, off = [raw(s.topic_events, {"event_id": "ev", "type": "started", "ts": T0})], 0
    base = {"event_id": "ev", "attendee_id": aid}
    for i in range(s.max_polls_per_attendee + 5):  # 5 beyond the cap
        recs.append(raw(ti, {**base, "id": long_text(128, f"p{i}-"), "type": "poll_vote",
                             "poll_id": long_text(128, f"{i}-"), "ts": T0 + i}, offset=off))
        off += 1
    for i in range(s.max_accounts_per_attendee + 5):
        recs.append(raw(ti, {**base, "id": long_text(128, f"c{i}-"), "type": "chat",
                             "account_id": long_text(256, f"{i}-"), "ts": T0 + 100 + i}, offset=off))
        off += 1
    # and the rest of its interactions as joins and leaves within one minute: as many sessions as it can hold
    n = s.max_interactions_per_attendee - off
    for i in range(n):
        recs.append(raw(ti, {**base, "id": long_text(128, f"s{i}-"), "type": "join" if i % 2 == 0 else "leave",
                             "ts": T0 + 200 + i // 2}, offset=off))
        off += 1
    out = proc.process(recs, T0 / 1000 + 10)
    att = proc.events["ev"].attendees[aid]
    assert len(att.polls) == s.max_polls_per_attendee and len(att.accounts) == s.max_accounts_per_attendee
    assert sum(att.counts) == s.max_interactions_per_attendee - 10
    assert proc.counters.capped == {"polls": 5, "accounts": 5}
    assert [d["reason"] for _, d in out.dead_letters] == ["cap_exceeded"] * 10
    largest = assert_fits(out)
    ids_records = [k for _, k, v in out.state if b"|i" in k and v is not None]
    assert len(ids_records) > 1, "the ids of one batch are split"
    assert largest > 100_000  # (the test does build big records)


def test_an_event_with_every_cap_reached_fits():
    s = settings()
    proc = Processor(s, partitions=1)
    key_accounts = [long_text(256, f"k{i}-") for i in range(600)]  # ~920 KB as JSON: the record fits 1 MiB
    recs = [raw(s.topic_events, {"event_id": "ev", "type": "scheduled", "ts": T0, "title": long_text(512, "t"),
                                 "key_accounts": key_accounts, "organizer_id": "org", "cost": 1, "currency": "EUR"})]
    recs.append(raw(s.topic_events, {"event_id": "ev", "type": "started", "ts": T0}))
    for i in range(s.max_polls_per_event + 3):  # each poll by another attendee
        recs.append(raw(s.topic_interactions, {"id": f"v{i}", "event_id": "ev", "attendee_id": long_text(256, f"{i}-"),
                                               "type": "poll_vote", "poll_id": long_text(128, f"{i}-"),
                                               "ts": T0 + i, "account_id": long_text(256, f"{i}-")}, offset=i))
    out = proc.process(recs, T0 / 1000 + 10)
    ev = proc.events["ev"]
    assert len(ev.polls_seen) == s.max_polls_per_event
    assert proc.counters.capped == {"key_accounts": 1, "event_polls": 3}
    assert_fits(out)
    # its summary, leads and ROI facts (the key accounts and every lead's accounts) fit too
    recs = [raw(s.topic_events, {"event_id": "ev", "type": "ended", "ts": T0 + 3_600_000})]
    out = proc.process(recs, T0 / 1000 + 20)
    assert_fits(out)
    done = proc.tick(T0 / 1000 + 86_400, snapshots=False)
    assert done.summaries and len(done.roi_facts) >= 2
    assert_fits(done)
    roi = proc.process([raw(s.topic_roi_facts, v, key=k, offset=i) for i, (k, v) in enumerate(done.roi_facts)],
                       T0 / 1000 + 86_400)
    assert not roi.dead_letters and roi.roi
    assert_fits(roi)


def test_a_batch_of_the_longest_ids_is_split_into_records_that_fit():
    s = settings()
    proc = Processor(s, partitions=1)
    recs = [raw(s.topic_interactions, {"id": long_text(128, f"{i}-"), "event_id": "ev",
                                       "attendee_id": long_text(256, f"{i % 500}-"), "type": "heartbeat",
                                       "ts": T0 + i}, offset=i) for i in range(10_000)]
    out = proc.process(recs, T0 / 1000 + 20)
    ids = [orjson.loads(v) for _, k, v in out.state if b"|i" in k]
    assert sum(len(r) for r in ids) == 10_000 * 5 and len(ids) >= 10
    assert_fits(out)
    # and they restore to the same id memory
    fresh = Processor(s, partitions=1)
    fresh.restore(0, [(k, v) for _, k, v in out.state if v is not None], T0 / 1000 + 20)
    assert fresh.events["ev"]._id_owner == proc.events["ev"]._id_owner


def test_a_dead_letter_of_a_record_of_the_largest_size_fits():
    s = settings(max_record_bytes=65_536)
    proc = Processor(s, partitions=1)
    value = b'{"event_id": "ev", "x": "' + b"y" * (LIMIT - 200) + b'"}'
    key = b"k" * 10_000
    out = proc.process([raw(s.topic_interactions, value, key=key)], NOW_S)
    ((dlq_key, letter),) = out.dead_letters
    assert letter["reason"] == "too_large"
    dlq_key, encoded = fit.dead_letter(dlq_key, letter, LIMIT)
    assert fit.record_bytes(dlq_key, encoded) <= LIMIT
    sent = orjson.loads(encoded)
    assert validator("dead_letter").is_valid(sent)
    assert sent["truncated"] == {"key_bytes": len(key), "value_bytes": len(value)}
    assert value.startswith(base64.b64decode(sent["value_b64"])) and len(base64.b64decode(sent["value_b64"])) > 400_000


def test_a_summary_too_large_leaves_out_its_oldest_minutes():
    minutes = [{"minute": T0 + i * 60_000, "attendees_start": 10**6, "attendees_end": 10**6, "peak_concurrent": 10**6,
                "joins": 10**6, "leaves": 10**6} for i in range(20_000)]
    summary = {"event_id": "ev", "attendance_curve": minutes,
               "drop_off_minutes": [{"minute": m["minute"], "leaves": 1, "attendees_start": 2,
                                     "drop_off_ratio": 0.5} for m in minutes]}
    assert fit.record_bytes(b"ev", orjson.dumps(summary)) > LIMIT
    value = fit.summary(b"ev", summary, LIMIT)
    got = orjson.loads(value)
    assert fit.record_bytes(b"ev", value) <= LIMIT
    assert got["attendance_curve"] == minutes[got["minutes_left_out"]:]
    assert got["drop_off_minutes"][0]["minute"] == got["attendance_curve"][0]["minute"]
    one_more = minutes[got["minutes_left_out"] - 1:]  # the fewest left out: one minute more does not fit
    drops = [d for d in summary["drop_off_minutes"] if d["minute"] >= one_more[0]["minute"]]
    bigger = dict(got, attendance_curve=one_more, drop_off_minutes=drops, minutes_left_out=got["minutes_left_out"] - 1)
    assert fit.record_bytes(b"ev", orjson.dumps(bigger)) > LIMIT


def test_an_output_that_cannot_fit_becomes_a_dead_letter_naming_it():
    value = b"x" * (2 * LIMIT)
    letter = fit.output_too_large("livepulse.leads", 3, b"a1", value, LIMIT, 1)
    key, encoded = fit.dead_letter(b"a1", letter, LIMIT)
    assert fit.record_bytes(key, encoded) <= LIMIT
    sent = orjson.loads(encoded)
    assert validator("dead_letter").is_valid(sent)
    assert (sent["reason"], sent["source_topic"], sent["truncated"]["value_bytes"]) == (
        "output_too_large", "livepulse.leads", 2 * LIMIT)


def test_the_sender_never_sends_a_record_over_the_limit():
    import pytest

    from streams.outputs.batches import BatchSender

    class Producer:
        def create_batch(self):
            raise AssertionError("nothing may be appended")

    sender = BatchSender(Producer(), LIMIT)
    with pytest.raises(fit.RecordTooLarge):
        sender.append("livepulse.summary", 0, b"k", b"v" * LIMIT)
