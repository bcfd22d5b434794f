"""LivePulse: live-event engagement pipeline (ingest -> domain -> state -> outputs)."""

__version__ = "0.1.0"
