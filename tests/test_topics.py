"""The configs a worker creates its topics with (streams/topics.py, docs/data-protection.md): every topic has one,
personal data has a bounded life on every topic, and the settings override the defaults."""

from __future__ import annotations

from streams.settings import Settings
from streams.state.store import changelog_topic
from streams.topics import DAY_MS, topic_configs

PERSONAL = ("topic_interactions", "topic_opportunities", "topic_rekeyed", "topic_roi_facts", "topic_erasure",
            "topic_dlq", "topic_leads")


def test_every_topic_has_configs_and_personal_data_a_bounded_life():
    s = Settings()
    configs = topic_configs(s)
    topics = {getattr(s, f) for f in Settings.model_fields if f.startswith("topic_")} | {changelog_topic(s.app_id)}
    assert set(configs) == topics
    for field in PERSONAL:
        c = configs[getattr(s, field)]
        timed = "delete" in c["cleanup.policy"] and int(c["retention.ms"]) > 0
        assert timed or "compact" in c["cleanup.policy"], field
        if c["cleanup.policy"] == "delete":
            assert int(c["segment.ms"]) <= int(c["retention.ms"]), field
    changelog = configs[changelog_topic(s.app_id)]
    assert changelog["cleanup.policy"] == "compact" and int(changelog["max.compaction.lag.ms"]) == 7 * DAY_MS
    assert configs[s.topic_leads] == {"cleanup.policy": "compact,delete", "retention.ms": str(30 * DAY_MS),
                                      "max.compaction.lag.ms": str(7 * DAY_MS), "delete.retention.ms": str(DAY_MS)}


def test_settings_override_the_retention():
    s = Settings(retention_input_days=0.5, retention_dlq_days=-1, retention_leads_days=-1, max_compaction_lag_days=1)
    configs = topic_configs(s)
    assert configs[s.topic_interactions] == {"cleanup.policy": "delete", "retention.ms": str(DAY_MS // 2),
                                             "segment.ms": str(DAY_MS // 2)}
    assert configs[s.topic_dlq] == {"cleanup.policy": "delete", "retention.ms": "-1"}  # forever: no segment roll
    assert configs[s.topic_leads]["cleanup.policy"] == "compact" and "retention.ms" not in configs[s.topic_leads]
    assert configs[changelog_topic(s.app_id)]["max.compaction.lag.ms"] == str(DAY_MS)
