"""The HTTP front door: sources outside Kafka (webinar platforms' webhooks, browsers, scripts) -> input topics."""
