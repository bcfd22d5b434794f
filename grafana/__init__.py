"""LivePulse Grafana dashboards as code (`python -m grafana.dashboards` regenerates grafana/dashboards/*.json)."""
