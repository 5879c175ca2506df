# The two commands: `make demo` runs the product, `make test` runs the whole suite.
# Both start a private PostgreSQL and Redis under .local/ unless DATABASE_URL / REDIS_URL are set.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PORT ?= 8000
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
SERVICES := $(PY) -m plgapp.devservices
PYTEST_ARGS ?=
# The suite runs in this many processes (pytest-xdist, a test file at a time each; 0: in one process). ADR 0029.
TEST_PROCESSES ?= 2
DEMO_ARGS ?=
BENCH ?= ingest scoring playbooks pqls slack
BENCH_ARGS ?=
SCORING_ARGS ?=
PLAYBOOK_ARGS ?=
CHAOS_ARGS ?=
PQLS_ARGS ?=
SLACK_ARGS ?=
# Browser tests drive Debian's Chromium (never a downloaded browser build).
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM_PATH := $(CHROMIUM)

.PHONY: help install lint format test demo run bench chaos clean

help:
	@echo "make demo    run the product at http://127.0.0.1:$(PORT) (web + worker + beat); DEMO_ARGS=--check to smoke-test"
	@echo "make test    lint, then the whole test suite on real PostgreSQL and Redis (PYTEST_ARGS=... to narrow;"
	@echo "             TEST_PROCESSES=0 for one process)"
	@echo "make run     web + worker + beat against the configured or embedded services, port PORT"
	@echo "make lint    ruff check, ruff format --check, mypy"
	@echo "make format  ruff format + autofix"
	@echo "make bench   benchmarks, print figures (BENCH=ingest|scoring|playbooks|pqls|slack to pick, default all;"
	@echo "             SCORING_ARGS=\"--accounts 10000\"; pqls builds a 5M-user database once: ~8 min, ~10 GB)"
	@echo "make chaos   fault-injection run (~7 min): kills, Redis and PostgreSQL outages, Slack storm; prints every figure"
	@echo "make clean   remove .venv and .local (stops nothing: run after the services are down)"

$(INSTALLED): pyproject.toml
	@test -x $(PY) || { py=$$(scripts/find-python) && echo "creating $(VENV) with $$py" && $$py -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(INSTALLED)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@# django-stubs loads the settings module; it connects to nothing, so placeholders are enough.
	SECRET_KEY=mypy-only-placeholder-not-a-real-secret-000 DATABASE_URL=postgres://mypy@localhost/mypy \
		REDIS_URL=redis://localhost:1/0 $(VENV)/bin/mypy .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else \
		echo "The browser tests need Chromium: sudo apt-get install chromium (or set CHROMIUM=/path/to/chromium)" >&2; \
		exit 1; fi; \
	echo "installing Debian's chromium package for the browser tests"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null

test: lint $(CHROMIUM)
	$(SERVICES) run --instance test -- $(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

demo: install
	$(SERVICES) run --instance dev -- $(PY) -m plgapp.runner demo --port $(PORT) $(DEMO_ARGS)

run: install
	$(SERVICES) run --instance dev -- $(PY) -m plgapp.runner run --port $(PORT)

# BENCH picks the benchmarks (ingest, scoring, playbooks, pqls, slack; all by default). BENCH_ARGS go to the ingestion
# benchmark, SCORING_ARGS to the scoring one (e.g. "--accounts 10000" for a quick run), PLAYBOOK_ARGS to the
# playbook sweep, which runs over the scoring benchmark's tenant (same --accounts); then event -> action latency.
# pqls: the PQL list's pages 1/10/100 in a 1M-user tenant of 5M users (PQLS_ARGS, e.g. "--tenants 1"; the data is
# built once and reused); slack: qualifying event -> message at the fake Slack under 1,000 events/s (SLACK_ARGS).
bench: install
ifneq ($(filter ingest,$(BENCH)),)
	$(SERVICES) run --instance bench -- $(PY) tests/bench/bench_ingest.py $(BENCH_ARGS)
endif
ifneq ($(filter scoring,$(BENCH)),)
	$(SERVICES) run --instance bench -- $(PY) tests/bench/bench_scoring.py $(SCORING_ARGS)
endif
ifneq ($(filter playbooks,$(BENCH)),)
	$(SERVICES) run --instance bench -- $(PY) tests/bench/bench_playbook_sweep.py $(PLAYBOOK_ARGS)
	$(SERVICES) run --instance bench -- $(PY) tests/bench/bench_playbook_latency.py
endif
ifneq ($(filter pqls,$(BENCH)),)
	$(SERVICES) run --instance benchmk -- $(PY) tests/bench/bench_pqls.py $(PQLS_ARGS)
endif
ifneq ($(filter slack,$(BENCH)),)
	$(SERVICES) run --instance benchslack -- $(PY) tests/bench/bench_slack_latency.py $(SLACK_ARGS)
endif

# The chaos suite starts its own PostgreSQL and Redis (.local/chaos) so that it can stop and restart them; it needs
# no DATABASE_URL / REDIS_URL. CHAOS_ARGS: --short (about 2 minutes), --seed N, --rate EVENTS_PER_SECOND, --json.
chaos: install
	env -u DATABASE_URL -u DATABASE_OWNER_URL -u REDIS_URL $(PY) -m tests.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .local .mypy_cache .ruff_cache .pytest_cache
