"""`livepulse gateway`: the HTTP front door that turns requests into records of the input topics.

    ingest API (/v1/interactions, /v1/events, /v1/opportunities) ─┐
    browser beacon (/v1/collect, /v1/livepulse.js) ───────────────┼─▶ validation (streams.ingest) ─▶ producer ─▶ Kafka
    Zoom webhooks (/webhooks/zoom) ───────────────────────────────┘         (acks=all, bounded in-flight)

Stateless: any number of gateways run behind a load balancer. A request is answered only after Kafka acknowledged
its records; when it cannot be, the answer is 503 with Retry-After and the sender keeps the data.
"""
