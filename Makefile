# Taskstream: `make run` (embedded, no services) and `make test` (real services) are the
# quick start; everything else here is what those two need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
PORT ?= 8000

.PHONY: install run services services-down lint test test-unit chaos clean frontend

## The browser side (frontend/, Node 20 + npm): `npm ci` once per lock file (stamped, like the
## venv), then the client and React packages and the demo bundle Django serves at `/`
## and the admin's live script (realtime/static/taskstream/dist/, gitignored), rebuilt when a
## source changes.
FRONTEND_STAMP := frontend/node_modules/.installed-$(shell cksum < frontend/package-lock.json | cut -d' ' -f1)
FRONTEND_SRC := $(shell find frontend/packages/*/src frontend/demo/src frontend/demo/build.mjs frontend/admin/src frontend/admin/build.mjs frontend/tsconfig.base.json frontend/packages/*/tsconfig.json -type f 2>/dev/null)
DEMO_BUNDLE := realtime/static/taskstream/dist/demo.js
# The admin's live views (frontend/admin), built by the same `npm run build`.
ADMIN_BUNDLE := realtime/static/taskstream/dist/admin-live.js

# The stamp's name carries the lock file's checksum, so it needs no mtime prerequisite: one
# would re-run `npm ci` in a fresh checkout or worktree (whose lock file is newer than the
# stamp) and, through a node_modules shared by a symlink, empty another checkout's.
$(FRONTEND_STAMP):
	cd frontend && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	@rm -f frontend/node_modules/.installed-*
	@touch $(FRONTEND_STAMP)

$(DEMO_BUNDLE) $(ADMIN_BUNDLE) &: $(FRONTEND_STAMP) $(FRONTEND_SRC)
	cd frontend && npm run build
	@touch $(DEMO_BUNDLE) $(ADMIN_BUNDLE)

frontend: $(DEMO_BUNDLE) $(ADMIN_BUNDLE)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

## The whole product in one process: SQLite, in-process layer, embedded Kafka.
run: install frontend
	DJANGO_DEBUG=true $(PY) manage.py run_embedded --port $(PORT)

## Install (apt/Maven on first use) and start Redis, PostgreSQL and Kafka on loopback;
## install nginx and Chromium, which the acceptance tests drive.
services: install
	PYTHON=$(PY) scripts/services up
	PYTHON=$(PY) scripts/services tools

services-down:
	PYTHON=$(PY) scripts/services down

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DJANGO_SECRET_KEY=lint-only $(VENV)/bin/mypy .

## The optional OpenTelemetry packages (requirements-otel.txt), for the tests of the tracing
## path (tests/test_tracing.py). `make install` leaves them out; installed, they stay off in
## any process without an OTLP endpoint.
OTEL_STAMP := $(VENV)/.otel-$(shell cat requirements-otel.txt | cksum | cut -d' ' -f1)

$(OTEL_STAMP): requirements-otel.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-otel.txt
	@rm -f $(VENV)/.otel-*
	@touch $(OTEL_STAMP)

## Lint, types, then every test against the real services.
test: install $(OTEL_STAMP) services lint frontend
	eval "$$(PYTHON=$(PY) scripts/services env)" && \
	  DJANGO_SECRET_KEY=test-only-secret-key-not-for-production-0123456789 \
	  $(PY) -m pytest $(PYTEST_ARGS)

## The chaos suite (#10): one fault at a time under load; writes docs/reliability.md's table.
chaos: install services
	eval "$$(PYTHON=$(PY) scripts/services env)" && \
	  DJANGO_SECRET_KEY=test-only-secret-key-not-for-production-0123456789 TASKSTREAM_CHAOS=full \
	  $(PY) -m pytest -s tests/test_chaos.py $(PYTEST_ARGS)

## Pure unit tests only (no services; SQLite).
test-unit: install frontend
	DJANGO_DEBUG=true $(PY) -m pytest -m "not services" $(PYTEST_ARGS)

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache realtime/static/taskstream/dist

## Benchmarks against peers (bench/, issue #4): writes docs/benchmarks.md and docs/benchmarks-*.png.
## `bench` is the full run (< 15 min), `bench-quick` the small one (< 3 min).
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BENCH_STAMP := $(VENV)/.bench-$(shell cat bench/requirements.txt | cksum | cut -d' ' -f1)

$(BENCH_STAMP): bench/requirements.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	@rm -f $(VENV)/.bench-*
	@touch $(BENCH_STAMP)

bench-deps: install $(BENCH_STAMP)
	cd bench && $(GO) build -o .build/loadclient ./loadclient && $(GO) build -o .build/gohub ./peers/gohub

bench: bench-deps
	PYTHON=$(PY) scripts/services up
	eval "$$(PYTHON=$(PY) scripts/services env)" && $(PY) bench/run.py --mode full
	$(PY) bench/report.py --mode full

bench-quick: bench-deps
	PYTHON=$(PY) scripts/services up
	eval "$$(PYTHON=$(PY) scripts/services env)" && $(PY) bench/run.py --mode quick
	$(PY) bench/report.py --mode quick

.PHONY: bench bench-quick bench-deps
