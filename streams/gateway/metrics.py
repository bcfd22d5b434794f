"""The gateway's Prometheus metrics, in a registry of its own (several gateways may run in one process in tests).

Labels are bounded: routes are the fixed route names, reasons the fixed reason codes, Zoom event names a known
list with everything else folded into "other". No label ever carries an id, an address or a personal datum.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Zoom event names counted by name; any other name is counted as "other" (Zoom has hundreds and adds more).
ZOOM_EVENT_NAMES = frozenset({
    "endpoint.url_validation",
    *(f"{kind}.{what}" for kind in ("webinar", "meeting") for what in (
        "started", "ended", "participant_joined", "participant_left", "registration_created",
        "registration_approved", "registration_cancelled", "chat_message_sent", "created", "updated", "deleted",
        "sharing_started", "sharing_ended", "participant_jbh_joined", "participant_jbh_waiting",
        "participant_admitted", "participant_put_in_waiting_room")),
    "recording.completed",
})

ROUTES = frozenset({"/health", "/metrics", "/v1/interactions", "/v1/events", "/v1/opportunities", "/v1/collect",
                    "/v1/livepulse.js", "/webhooks/zoom"})

PRODUCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("livepulse_gateway_requests_total", "HTTP requests answered, by route and status.",
                                ["route", "status"], registry=r)
        self.rejects = Counter("livepulse_gateway_rejects_total",
                               "Requests and records refused, by reason code (the records' codes are the DLQ's).",
                               ["reason"], registry=r)
        self.records = Counter("livepulse_gateway_records_total", "Records acknowledged by Kafka, by topic kind.",
                               ["kind"], registry=r)
        self.produce_latency = Histogram("livepulse_gateway_produce_latency_seconds",
                                         "Time from sending a request's records to Kafka's acknowledgement of all.",
                                         buckets=PRODUCE_BUCKETS, registry=r)
        self.in_flight_requests = Gauge("livepulse_gateway_in_flight_requests",
                                        "Requests whose records wait for Kafka's acknowledgement.", registry=r)
        self.in_flight_bytes = Gauge("livepulse_gateway_in_flight_bytes",
                                     "Bytes of records sent to Kafka and not yet acknowledged.", registry=r)
        self.broker_up = Gauge("livepulse_gateway_broker_up",
                               "1 while the producer is connected and Kafka answers (last send, last metadata check).", registry=r)
        self.zoom_events = Counter("livepulse_gateway_zoom_events_total",
                                   "Verified Zoom webhooks by event name (unknown names as \"other\") and outcome.",
                                   ["event", "outcome"], registry=r)

    def route(self, path: str) -> str:
        return path if path in ROUTES else "other"

    def zoom_event(self, name: str, outcome: str) -> None:
        self.zoom_events.labels(name if name in ZOOM_EVENT_NAMES else "other", outcome).inc()
