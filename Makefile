# Durable Chat. `make run` installs and serves the app; `make test` installs and runs the tests.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: run dev test test-postgres smoke-run bench screenshots migrate system-deps test-system-deps clean

run: system-deps $(VENV)/.installed migrate  ## install, migrate and serve on http://127.0.0.1:5000
	$(VENV)/bin/gunicorn -c gunicorn.conf.py app:app

dev: system-deps $(VENV)/.installed migrate  ## Flask's reloading dev server
	$(VENV)/bin/flask --app app run --debug

test: test-system-deps $(VENV)/.installed-test  ## the whole suite (SQLite, real Redis, real Chromium)
	$(PY) -m pytest $(PYTEST_ARGS)

test-postgres: test-system-deps $(VENV)/.installed-test  ## the suite on PostgreSQL (TEST_DATABASE_URL)
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test} $(PY) -m pytest -m "not browser" $(PYTEST_ARGS)

smoke-run: system-deps  ## `make run` in a fresh clone + fresh venv (run deps only), chatted with, stopped
	scripts/smoke-run

bench: system-deps $(VENV)/.installed  ## throughput and latency figures (prints a table)
	$(PY) bench/streams.py

screenshots: test-system-deps $(VENV)/.installed-test  ## README screenshots in docs/
	$(PY) scripts/screenshots.py

migrate: $(VENV)/.installed
	$(VENV)/bin/flask --app app db upgrade

system-deps:
	scripts/ensure-system-packages run

test-system-deps:
	scripts/ensure-system-packages test

# The run install holds the run dependencies only; the test extra is added on top by the test
# targets, never needed by `make run` (scripts/smoke-run proves that on a fresh clone).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) instance *.egg-info
