"""The configs of the topics a worker creates: how long each keeps what it holds (docs/data-protection.md).

Every topic that holds personal data gets a bounded life: time retention for the streams, compaction for the
upsert topics (the changelog and livepulse.leads), where a record goes away once a newer value or a tombstone of
its key is compacted over it -- at the latest `max_compaction_lag_days` later. Topics that already exist keep
their configs (an operator's own choice): docs/data-protection.md shows how to set them.
"""

from __future__ import annotations

from streams.settings import Settings
from streams.state.store import changelog_topic

DAY_MS = 86_400_000
# How long a tombstone itself stays readable after compaction (its key names an attendee): Kafka's default.
TOMBSTONE_RETENTION_MS = DAY_MS
# Longest a time-retained segment stays open: a record outlives its topic's retention by at most this much.
SEGMENT_MS = DAY_MS


def retention_ms(days: float) -> str:
    return "-1" if days < 0 else str(round(days * DAY_MS))


def topic_configs(s: Settings) -> dict[str, dict[str, str]]:
    """Topic -> the configs to create it with."""
    def timed(days: float) -> dict[str, str]:
        configs = {"cleanup.policy": "delete", "retention.ms": retention_ms(days)}
        if days >= 0:  # Kafka deletes whole segments: roll them often enough that retention is (nearly) exact
            configs["segment.ms"] = str(max(60_000, min(SEGMENT_MS, round(days * DAY_MS))))
        return configs

    compacted = {"cleanup.policy": "compact", "max.compaction.lag.ms": str(round(s.max_compaction_lag_days * DAY_MS)),
                 "delete.retention.ms": str(TOMBSTONE_RETENTION_MS)}
    leads = dict(compacted)
    if s.retention_leads_days >= 0:
        leads.update({"cleanup.policy": "compact,delete", "retention.ms": retention_ms(s.retention_leads_days)})
    configs = {t: timed(s.retention_input_days) for t in (s.topic_interactions, s.topic_events,
                                                            s.topic_opportunities)}
    configs |= {t: timed(s.retention_internal_days) for t in (s.topic_rekeyed, s.topic_roi_facts, s.topic_erasure)}
    configs |= {s.topic_dlq: timed(s.retention_dlq_days),
                s.topic_minute: timed(s.retention_outputs_days), s.topic_summary: timed(s.retention_outputs_days),
                s.topic_leads: leads, changelog_topic(s.app_id): compacted,
                # aggregates per event, compacted: the latest snapshot / ROI record of each event
                s.topic_live: {"cleanup.policy": "compact"}, s.topic_roi: {"cleanup.policy": "compact"}}
    return configs
