"""The one typed settings object of LivePulse.

Every option can be set with an environment variable named ``LIVEPULSE_<FIELD>``
(e.g. ``LIVEPULSE_BROKER``), from the env file named by ``LIVEPULSE_ENV_FILE`` (never a ``.env`` found in the
working directory: in the image that is the data volume), or with the matching CLI flag.
Durations are in seconds (floats allowed) because that is what operators type;
the domain converts them to the milliseconds it computes in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ScoreWeights(BaseSettings):
    """Weights of the engagement score (docs/semantics.md "Engagement score"); they should sum to 100."""

    model_config = SettingsConfigDict(env_prefix="LIVEPULSE_SCORE_", extra="ignore")

    dwell: float = Field(40.0, description="Weight of min(1, dwell / elapsed).")
    chat: float = Field(15.0, description="Weight of min(1, (chats + reactions) / 3).")
    question: float = Field(15.0, description="Weight of asking at least one question.")
    poll: float = Field(15.0, description="Weight of distinct polls voted / distinct polls seen.")
    cta: float = Field(15.0, description="Weight of clicking any call to action.")


class LeadGrades(BaseSettings):
    """Engagement-score thresholds of the lead grades (docs/semantics.md "Leads and grades"); below `c` is grade D."""

    model_config = SettingsConfigDict(env_prefix="LIVEPULSE_GRADE_", extra="ignore")

    a: float = Field(70.0, ge=0, le=100, description="Lowest score of grade A.")
    b: float = Field(50.0, ge=0, le=100, description="Lowest score of grade B.")
    c: float = Field(25.0, ge=0, le=100, description="Lowest score of grade C.")

    @model_validator(mode="after")
    def _ordered(self) -> LeadGrades:
        if not self.a >= self.b >= self.c:
            raise ValueError(f"grade thresholds must satisfy a >= b >= c, got a={self.a} b={self.b} c={self.c}")
        return self


# Memory figures the derived caps use (docs/caps.md "Memory"; measured by `livepulse bench`, docs/performance.md).
RESERVED_BYTES = 192 * 1_048_576  # the healthy worker (~130 MiB) plus RocksDB buffers and batch peaks
ATTENDEE_BYTES = 1_000  # RSS per present attendee: 950-957 B measured with 1,000,000 of them, rounded up
EVENT_BYTES = 65_536  # an event beside its attendees: its record, windows and an hour's attendance curve
# ROI ledgers: tracemalloc measured 1,455 B per opportunity and 1,099 B per person (one event, one account), with
# their indexes and tallies; x 1.2 for RSS (the attendee's ratio: 955 B RSS, 797 B tracemalloc), rounded up.
OPPORTUNITY_BYTES = 1_800
PERSON_BYTES = 1_350
ATTENDEE_SHARE, EVENT_SHARE, ROI_SHARE = 6, 1, 1  # eighths of the budget after the reserve


def derived_caps(s) -> dict[str, int]:
    """The default worker-wide caps of a memory budget: events, attendees, ROI opportunities and persons."""
    eighth = max(0, s.memory_budget_bytes - RESERVED_BYTES) // 8
    return {"max_events": max(1, eighth * EVENT_SHARE // EVENT_BYTES),
            "max_attendees_per_worker": max(1, eighth * ATTENDEE_SHARE // ATTENDEE_BYTES),
            "max_opportunities_per_worker": max(1, eighth * ROI_SHARE // 2 // OPPORTUNITY_BYTES),
            "max_persons_per_worker": max(1, eighth * ROI_SHARE // 2 // PERSON_BYTES)}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVEPULSE_", env_file=None, extra="ignore", env_nested_delimiter="__")

    def __init__(self, **values: Any) -> None:
        # The one env file read is the one LIVEPULSE_ENV_FILE names (docs/security.md): a `.env` in the working
        # directory -- the data volume in the image, writable by the worker -- is never read by itself.
        if "_env_file" not in values:
            values["_env_file"] = env_file()
        super().__init__(**values)

    # --- Kafka connection -------------------------------------------------------------
    broker: str = Field(
        "kafka://localhost:9092",
        description="Bootstrap servers, comma separated, each as kafka://host:port.",
    )
    app_id: str = Field(
        "livepulse",
        description="Faust application id: the consumer group and the prefix of changelog topics.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when security_protocol is SASL_*."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password (prefer sasl_password_file; never logged)."
    )
    sasl_password_file: Path | None = Field(
        None, description="File holding the SASL password (e.g. a mounted secret)."
    )
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers (TLS).")
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS.")

    # --- Topics -----------------------------------------------------------------------
    topic_interactions: str = Field("livepulse.interactions", description="Input: interactions, key event_id.")
    topic_events: str = Field("livepulse.events", description="Input: event lifecycle/metadata, key event_id.")
    topic_rekeyed: str = Field(
        "livepulse.interactions.rekeyed",
        description="Internal: valid interactions that arrived on the wrong partition, re-keyed by event_id.",
    )
    topic_dlq: str = Field("livepulse.dlq", description="Output: rejected input records with their reason.")
    topic_minute: str = Field("livepulse.engagement.minute", description="Output: closed minute windows.")
    topic_live: str = Field("livepulse.engagement.live", description="Output: live snapshots (compaction-friendly).")
    topic_summary: str = Field("livepulse.engagement.summary", description="Output: final event summaries.")
    topic_leads: str = Field("livepulse.leads", description="Output: one lead per attendee/no-show at event end.")
    topic_opportunities: str = Field(
        "livepulse.crm.opportunities", description="Input: CRM opportunity versions, key organizer_id."
    )
    topic_roi_facts: str = Field(
        "livepulse.roi.facts", description="Internal: ended events and their leads, re-keyed by organizer_id."
    )
    topic_roi: str = Field("livepulse.roi", description="Output: marketing ROI per event, key event_id.")
    topic_erasure: str = Field(
        "livepulse.erasure",
        description="Internal: erasure requests (`livepulse forget`), one copy per partition (docs/data-protection.md).",
    )
    partitions: int = Field(
        8, ge=1, description="Partitions used when LivePulse creates the input topics; existing topics keep theirs."
    )
    replication_factor: int = Field(1, ge=1, description="Replication factor of topics LivePulse creates.")

    # --- Retention of topics LivePulse creates (docs/data-protection.md) -----------------
    retention_input_days: float = Field(
        7.0, ge=-1,
        description="retention.ms of the input topics (interactions, events, crm.opportunities); -1: forever.",
    )
    retention_internal_days: float = Field(
        7.0, ge=-1,
        description="retention.ms of the internal topics (interactions.rekeyed, roi.facts, erasure); -1: forever.",
    )
    retention_dlq_days: float = Field(7.0, ge=-1, description="retention.ms of the dead-letter topic; -1: forever.")
    retention_leads_days: float = Field(
        30.0, ge=-1,
        description="livepulse.leads is compacted (key event_id/attendee_id) and its records are deleted after this "
        "many days too (cleanup.policy compact,delete); -1: compacted only, kept until erased.",
    )
    retention_outputs_days: float = Field(
        30.0, ge=-1,
        description="retention.ms of the aggregate outputs (engagement.minute, engagement.summary); -1: forever.",
    )
    max_compaction_lag_days: float = Field(
        7.0, gt=0,
        description="max.compaction.lag.ms of the compacted topics holding personal data (changelog, leads): "
        "the longest an overwritten or tombstoned record may stay readable.",
    )

    # --- Worker -----------------------------------------------------------------------
    web_host: str = Field(
        "127.0.0.1",
        description="Address the worker's web server (/metrics, /health) binds to: this host only by default; the "
        "image, compose and Kubernetes set 0.0.0.0 (with a NetworkPolicy in Kubernetes).",
    )
    web_port: int = Field(6066, ge=1, le=65535, description="Port of /metrics and /health.")
    data_dir: Path = Field(Path("var/livepulse"), description="Directory for the worker's local state (RocksDB).")
    store: Literal["memory", "rocksdb"] = Field(
        "rocksdb",
        description="Table store: rocksdb (local files under data_dir, fast restart) or memory (rebuilt from the "
        "changelog at every start).",
    )
    batch_max_records: int = Field(10000, ge=1, description="Most records processed as one batch.")
    batch_max_wait_s: float = Field(
        0.2, gt=0,
        description="Longest wait to fill a batch of records that Faust delivers through the agent's stream (a "
        "fallback); input normally arrives one poll at a time and is processed at once.",
    )
    fetch_max_wait_ms: int = Field(
        50, ge=0, le=60_000,
        description="Longest the broker may hold a fetch request that finds no new records. The consumer keeps one "
        "fetch in flight per broker, so busy partitions wait behind one held for quiet ones (Faust's 1,500 ms "
        "left the worker idle between polls).",
    )
    checkpoint_interval_s: float = Field(
        0.0, ge=0, le=60,
        description="How often processed input is made durable: the state it changed is written to the changelog "
        "and its offsets are marked for commit. 0 (the default): after every poll. Longer: an attendee busy in "
        "several polls is written once per interval (fewer changelog writes when catching up), but the state "
        "records of a whole interval are built at once (a higher memory peak while an audience joins), and after "
        "a crash up to this much input is read again (idempotent; the outputs it made may be sent twice).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    kafka_log_level: Literal["debug", "info", "warning", "error"] | None = Field(
        None,
        description="Log level of the Kafka client libraries (aiokafka). Unset: log_level, but never below info: at "
        "debug they log every request they send, SASL logins included (secrets are masked in every log line "
        "anyway, docs/security.md).",
    )
    session_timeout_s: float = Field(
        10.0, gt=0, description="Consumer-group session timeout: how fast a crashed worker's partitions move on."
    )
    group_instance_id: str | None = Field(
        None, min_length=1, max_length=249,
        description="Static group membership (Kafka KIP-345): an id stable across restarts and unique to this "
        "worker, such as its StatefulSet pod name. A restarted worker then gets its partitions back without waiting "
        "out the session timeout and without moving anyone else's; a stopped one's wait for the session timeout. "
        "Two running workers must never share it (Kafka fences the older one, tansu does not). Off by default.",
    )
    startup_wait_s: float = Field(
        300.0, gt=0, description="How long a starting worker waits for Kafka to answer before giving up."
    )

    # --- Semantics (docs/semantics.md) ------------------------------------------------------
    idle_timeout_s: float = Field(120.0, gt=0, description="Silence after which a present attendee has left.")
    allowed_lateness_s: float = Field(
        30.0, ge=0, description="Out-of-order tolerance: records this far behind the event clock are still exact."
    )
    dedup_horizon_s: float = Field(
        600.0, gt=0, description="How long (event time) interaction ids are remembered for de-duplication."
    )
    snapshot_interval_s: float = Field(5.0, gt=0, description="Wall-clock interval of live snapshots.")
    snapshot_max_share: float = Field(
        0.25, gt=0, le=1,
        description="Most of the worker's time live snapshots may take: a round walks every present attendee, so "
        "with very large audiences rounds are spaced further apart than the interval, and the input keeps flowing.",
    )
    retention_s: float = Field(
        900.0, ge=0, description="How long an ended event's state and metric series are kept after its summary."
    )
    drop_off_minute_ratio: float = Field(
        0.1, ge=0, description="A minute whose drop-off ratio reaches this is listed in the summary's drop-off minutes."
    )
    max_record_bytes: int = Field(65536, ge=1, description="Largest accepted encoded input record.")
    max_future_skew_s: float = Field(
        86400.0, ge=0, description="Records stamped further than this ahead of the wall clock are rejected."
    )
    max_message_bytes: int = Field(
        1_048_576, ge=1_048_576,
        description="Largest record (key, value, headers and framing) any topic LivePulse writes accepts: Kafka's "
        "max.message.bytes of the smallest one (docs/caps.md). State records stay below it by construction; an "
        "output record above it is never sent.",
    )
    # --- Caps: bounded memory whatever the input (docs/semantics.md "Caps", docs/caps.md) -------------
    memory_budget_bytes: int = Field(
        1_073_741_824, ge=268_435_456,
        description="Memory the worker may use (its container limit): the default event, attendee and organiser "
        "caps follow from it (docs/caps.md).",
    )
    max_events: int | None = Field(
        None, ge=1, description="Most events one worker tracks; records of more are rejected. Unset: derived from "
        "memory_budget_bytes.",
    )
    max_attendees_per_worker: int | None = Field(
        None, ge=1, description="Most attendees one worker holds over all its events; records of more are rejected. "
        "Unset: derived from memory_budget_bytes.",
    )
    max_attendees_per_event: int = Field(
        250_000, ge=1, description="Most distinct attendees per event; records of more are rejected."
    )
    max_interactions_per_attendee: int = Field(
        20_000, ge=1, description="Most interactions kept per attendee and event; further ones are rejected."
    )
    max_polls_per_attendee: int = Field(
        64, ge=1, le=1000, description="Most distinct polls one attendee votes in per event; votes in more are rejected."
    )
    max_accounts_per_attendee: int = Field(
        8, ge=1, le=100, description="Most distinct account ids per attendee and event; records naming more are "
        "rejected.",
    )
    max_polls_per_event: int = Field(
        256, ge=1, le=1000, description="Most distinct polls per event; votes in more are rejected."
    )
    max_key_accounts_bytes: int = Field(
        262_144, ge=1024, le=524_288,
        description="Most bytes (JSON-encoded) of an event's key accounts (at most 10,000 of them); a lifecycle "
        "record naming more is applied without them and dead-lettered.",
    )
    max_channels_per_event: int = Field(
        20, ge=1, le=100,
        description="Most named registration channels reported per event; the rest are folded into `other`.",
    )
    max_event_span_s: float = Field(
        3 * 86400.0, gt=0,
        description="Minute windows further than this before an event's newest are skipped (a forged or broken ts).",
    )
    max_organizers: int = Field(1_000, ge=1, description="Most organisers one worker keeps ROI ledgers for.")
    max_opportunities_per_organizer: int = Field(
        20_000, ge=1, description="Most CRM opportunities one organiser's ROI ledger holds; versions of more are "
        "rejected.",
    )
    max_persons_per_organizer: int = Field(
        40_000, ge=1, description="Most persons (leads of its events) one organiser's ROI ledger remembers; leads of "
        "more are left out and their fact dead-lettered.",
    )
    max_opportunities_per_worker: int | None = Field(
        None, ge=1, description="Most CRM opportunities one worker holds over all its ROI ledgers. Unset: derived "
        "from memory_budget_bytes.",
    )
    max_persons_per_worker: int | None = Field(
        None, ge=1, description="Most ROI persons one worker holds over all its ROI ledgers. Unset: derived from "
        "memory_budget_bytes.",
    )
    poison_attempts: int = Field(
        3, ge=1,
        description="A record the worker process died on this many times, alone in flight, is skipped and "
        "dead-lettered (poison_record); see docs/guarantees.md \"Records that crash a worker\".",
    )
    abandon_after_s: float = Field(
        7 * 86400.0, gt=0,
        description="An event that never ended, silent this long (and past its scheduled end), is dropped.",
    )
    # --- Marketing ROI (docs/semantics.md "Marketing ROI") ------------------------------------
    roi_enabled: bool = Field(
        True, description="Feed ended events to the ROI ledgers (off: no ROI records and no ROI state)."
    )
    attribution_days: int = Field(
        30, ge=1, le=730, description="Days after an event in which a new opportunity is attributed to it."
    )
    attribution_days_key_accounts: int = Field(
        90, ge=1, le=730, description="The attribution window for opportunities of the event's key accounts."
    )
    attribution_model: Literal["last_touch", "linear"] = Field(
        "last_touch", description="Credit the last touching event, or split evenly over all touching events."
    )
    lead_memory_days: int = Field(
        365, ge=1, description="How long a person is remembered to tell new leads from known ones."
    )
    crm_lateness_days: int = Field(
        30, ge=0, description="How far CRM versions may arrive out of order; ROI state is kept this much longer."
    )
    # --- Gateway: `livepulse gateway` (docs/gateway.md) ------------------------------------
    gateway_host: str = Field(
        "127.0.0.1",
        description="Address the gateway's HTTP server binds to: this host only by default; the image, compose and "
        "Kubernetes set 0.0.0.0.",
    )
    gateway_port: int = Field(8080, ge=1, le=65535, description="Port of the gateway (API, beacon, webhooks, "
                              "/metrics and /health).")
    gateway_max_body_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1_048_576,
        description="Largest request body of the ingest API and the Zoom webhook; larger ones get 413 (too_large) "
        "without being read.",
    )
    gateway_max_records: int = Field(1000, ge=1, le=100_000, description="Most records in one ingest API request.")
    gateway_max_in_flight_bytes: int = Field(
        16 * 1_048_576, ge=1024,
        description="Most bytes of records sent to Kafka and not yet acknowledged, over all requests; a request "
        "that would exceed it gets 503 with Retry-After at once (memory stays bounded under a flood).",
    )
    gateway_max_buffered_bytes: int = Field(
        16 * 1_048_576, ge=1024,
        description="Most bytes of request bodies being received at once, over all connections; a request whose "
        "body would exceed it gets 503 with Retry-After (a flood of large bodies cannot exhaust memory).",
    )
    gateway_max_in_flight_requests: int = Field(
        512, ge=1, description="Most requests waiting for Kafka's acknowledgement at once; more get 503."
    )
    gateway_ack_timeout_s: float = Field(
        2.5, gt=0, le=60,
        description="Longest a request waits for Kafka to acknowledge its records before it is answered 503 "
        "(below Zoom's 3 s limit). A 503 means \"not acknowledged\": the records may still arrive, and a resend "
        "is de-duplicated by the interaction ids.",
    )
    gateway_retry_after_s: int = Field(2, ge=1, le=3600, description="Retry-After of a 503 answer, in seconds.")
    gateway_body_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Longest a client may take to send its request body (slow senders get 408)."
    )
    gateway_header_timeout_s: float = Field(
        10.0, gt=0, le=300,
        description="Longest a connection may stay idle: a new one until it has sent its first request's headers, "
        "a kept-alive one between requests (aiohttp's keep-alive timeout); then it is closed, so slow-header "
        "floods cannot hold sockets open.",
    )
    gateway_api_key_hashes: list[str] = Field(
        default_factory=list,
        description="Bearer API keys of the ingest API, as lower-case hex SHA-256 digests of the keys (never the "
        "keys themselves), a JSON list. Empty: the ingest API answers 401 to everyone.",
    )
    gateway_beacon_write_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Public write keys of the browser beacon per organiser, a JSON object "
        "{organizer_id: [key, ...]} (several keys per organiser for rotation). Empty: /v1/collect answers 401.",
    )
    gateway_cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose pages may send beacons, a JSON list; '*' allows any.",
    )
    gateway_collect_max_bytes: int = Field(
        8192, ge=256, le=65536, description="Largest body of one /v1/collect request."
    )
    gateway_collect_max_records: int = Field(
        20, ge=1, le=500, description="Most interactions in one /v1/collect request."
    )
    gateway_rate_per_client: float = Field(
        20.0, gt=0, description="Beacon requests per second allowed per client address (token bucket refill)."
    )
    gateway_burst_per_client: float = Field(60.0, ge=1, description="Token bucket size per client address.")
    gateway_rate_per_attendee: float = Field(
        2.0, gt=0, description="Beacon records per second allowed per event and attendee (token bucket refill)."
    )
    gateway_burst_per_attendee: float = Field(30.0, ge=1, description="Token bucket size per event and attendee.")
    gateway_rate_limit_keys: int = Field(
        100_000, ge=100,
        description="Most clients and attendees whose token buckets are remembered (least recently seen forgotten "
        "first): the rate limiter's memory is bounded.",
    )
    gateway_trust_forwarded_for: bool = Field(
        False,
        description="Take the client address of the rate limits from the last X-Forwarded-For entry (set it only "
        "behind a load balancer that writes that header).",
    )
    gateway_clock_skew_s: float = Field(
        10.0, ge=0, le=3600,
        description="How far a browser's ts may be from the gateway's clock: a beacon ts is clamped to "
        "[now - skew, now], and set to now when absent.",
    )
    gateway_zoom_secret_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Secret tokens of the Zoom app(s), a JSON list: a webhook verifies with any of them (rotation); "
        "URL validation answers with the first. Empty: /webhooks/zoom answers 401.",
    )
    gateway_zoom_tolerance_s: float = Field(
        300.0, gt=0, le=3600,
        description="Zoom webhooks whose x-zm-request-timestamp is further than this from the gateway's clock are "
        "rejected (replays).",
    )
    gateway_id_hash_key: SecretStr = Field(
        SecretStr(""),
        description="Key of the keyed hash (HMAC-SHA256) that turns Zoom's e-mail addresses and participant ids "
        "into attendee ids; keep it stable (a new key gives everyone new attendee ids) and secret.",
    )

    score: ScoreWeights = Field(default_factory=ScoreWeights, description="Engagement score weights.")
    grade: LeadGrades = Field(default_factory=LeadGrades, description="Lead grade thresholds.")

    @model_validator(mode="after")
    def _derived_caps(self) -> Settings:
        """Caps left unset follow from the memory budget (docs/caps.md "Memory")."""
        budget = derived_caps(self)
        for name, value in budget.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        return self

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        for part in value.split(","):
            part = part.strip()
            host = part.split("://", 1)[-1]
            if not host or ":" not in host:
                raise ValueError(f"broker entry {part!r} must look like kafka://host:port")
        return value

    # Derived values the domain uses (milliseconds, the unit of event time).
    @property
    def idle_timeout_ms(self) -> int:
        return round(self.idle_timeout_s * 1000)

    @property
    def allowed_lateness_ms(self) -> int:
        return round(self.allowed_lateness_s * 1000)

    @property
    def dedup_horizon_ms(self) -> int:
        return round(self.dedup_horizon_s * 1000)

    @property
    def bootstrap_servers(self) -> list[str]:
        """Broker list as host:port strings, for aiokafka."""
        return [p.strip().split("://", 1)[-1] for p in self.broker.split(",")]

    def sasl_password_value(self) -> str | None:
        """The SASL password, read from the file when one is configured."""
        if self.sasl_password_file is not None:
            return self.sasl_password_file.read_text().strip()
        return self.sasl_password.get_secret_value() if self.sasl_password else None


ENV_FILE_VAR = "LIVEPULSE_ENV_FILE"


def env_file() -> Path | None:
    """The env file LIVEPULSE_ENV_FILE names, or None; a name that is not a readable file is an error, not ignored."""
    name = os.environ.get(ENV_FILE_VAR)
    if not name:
        return None
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"{ENV_FILE_VAR}={name}: no such file")
    return path
