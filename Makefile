# The two commands a new user needs: `make demo` and `make test`.
# Each creates .venv (Python 3.11+) and installs what it needs on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: demo test lint typecheck docs pytest redis browser bench soak clean

# The demo needs the package alone (its four runtime dependencies), not the test
# toolchain: a newcomer sees it in seconds.
demo: $(RUN_STAMP)
	$(BIN)/python -m tidings demo

test: $(STAMP) redis browser lint typecheck docs pytest

lint: $(STAMP)
	$(BIN)/ruff check tidings tests bench
	$(BIN)/ruff format --check tidings

typecheck: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

pytest: $(STAMP) redis browser
	$(BIN)/pytest --cov --cov-report=term $(PYTEST_ARGS)

redis:
	@scripts/ensure-redis

# The browser test's chromium and chromedriver (system packages, as for redis-server).
browser:
	@scripts/ensure-browser

# Benchmarks against peers (a few minutes); writes bench/results/. Never part of `test`.
bench: $(STAMP) $(VENV)/.installed-bench redis
	$(BIN)/python -m bench $(BENCH_ARGS)

# Soak test for operators: steady traffic for SOAK_ARGS="--minutes N" (default 3)
# against a private redis-server; exits 1 on loss, reconnects or publish errors.
# Never part of `test`.
soak: $(STAMP) redis
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

$(VENV)/.installed-bench: pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,web,bench]'
	@touch $@

$(VENV)/bin/python:
	@scripts/check-python $(PYTHON)
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,web]'
	@touch $@ $(RUN_STAMP)

clean:
	rm -rf $(VENV) .coverage build dist *.egg-info
