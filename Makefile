# Durable Chat. `make run` installs and serves the app; `make test` installs and runs the tests.
# `make help` lists every target.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
PYTEST_ARGS ?=
# Test processes (pytest-xdist): each has its own redis-server, database and browser.
TEST_WORKERS ?= 2
BENCH_ARGS ?=

.PHONY: help run dev test test-fast test-postgres lint fmt smoke-run bench screenshots migrate \
        system-deps test-system-deps test-node-packages clean lock

help:  ## this list
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | expand -t 16

run: system-deps $(VENV)/.installed migrate  ## install, migrate and serve on http://127.0.0.1:5000
	$(VENV)/bin/gunicorn -c gunicorn.conf.py app:app

dev: system-deps $(VENV)/.installed migrate  ## Flask's reloading dev server
	$(VENV)/bin/flask --app app run --debug

test: test-system-deps $(VENV)/.installed-test  ## the whole suite (SQLite, real Redis, real Chromium)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: test-node-packages $(VENV)/.installed-test  ## the inner loop: no browser, no gunicorn, no restarts (under 30 s)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not browser and not slow" $(PYTEST_ARGS)

test-postgres: test-system-deps $(VENV)/.installed-test  ## the suite on PostgreSQL (TEST_DATABASE_URL)
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test} $(PY) -m pytest -n $(TEST_WORKERS) -m "not browser and not own_database" $(PYTEST_ARGS)

lint: $(VENV)/.installed-test  ## ruff check + ruff format --check + mypy (what CI runs first)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(VENV)/.installed-test  ## format and fix what ruff can
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

smoke-run: system-deps  ## `make run` in a fresh clone + fresh venv (run deps only), chatted with, stopped
	scripts/smoke-run

bench: $(VENV)/.installed  ## Durable Chat against resumable-stream, one run, one table (bench/results/)
	scripts/ensure-system-packages run
	scripts/ensure-system-packages bench
	mkdir -p bench/results
	$(PY) bench/streams.py --json bench/results/$$(date +%Y-%m-%d).jsonl $(BENCH_ARGS)
	$(PY) bench/plot.py bench/results/$$(date +%Y-%m-%d)-lag.png bench/results/$$(date +%Y-%m-%d).jsonl

screenshots: test-system-deps $(VENV)/.installed-test  ## README screenshots in docs/
	$(PY) scripts/screenshots.py

migrate: $(VENV)/.installed  ## apply the database migrations (flask db upgrade)
	$(VENV)/bin/flask --app app db upgrade

system-deps:
	scripts/ensure-system-packages run

# What the tests run from npm, each pinned by its package-lock.json: axe-core (tests/axe/), the
# reference MCP server (tests/mcp/) and an S3-compatible server (tests/s3/, FILE_STORE=s3://…).
test-node-packages:
	test -f tests/axe/node_modules/axe-core/axe.min.js || npm ci --prefix tests/axe --no-audit --no-fund --silent
	test -f tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js || npm ci --prefix tests/mcp --no-audit --no-fund --silent
	test -f tests/s3/node_modules/s3rver/package.json || npm ci --prefix tests/s3 --no-audit --no-fund --silent

test-system-deps: test-node-packages
	scripts/ensure-system-packages test

# The run install holds the run dependencies only; the test extra is added on top by the test
# targets, never needed by `make run` (scripts/smoke-run proves that on a fresh clone).
# Both install the pinned versions of requirements/*.lock (`make lock` writes them from
# pyproject.toml), then the project itself without resolving anything again.
$(VENV)/.installed: pyproject.toml requirements/run.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -r requirements/run.lock
	$(PIP) install --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements/test.lock
	$(PIP) install -r requirements/test.lock
	touch $@

lock: $(VENV)/.installed  ## pin every dependency anew (requirements/run.lock, requirements/test.lock) with uv
	$(PIP) install uv
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 -q --no-header -o requirements/run.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 -q --no-header -o requirements/test.lock

clean:  ## remove the venv, instance data and build files
	rm -rf $(VENV) instance *.egg-info build dist
