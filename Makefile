# fleetgen-spark: `make run` starts the service, `make test` checks everything.
# Needs only Python 3.10+, Java 17+ and make; the rest goes into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

RUN_ARGS ?= --config small --speedup 900

.PHONY: install run test test-fast lint bench cluster-up cluster-down clean-venv

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "fleetgen-spark needs Python 3.10 or newer")'
	@java -version >/dev/null 2>&1 || { echo "fleetgen-spark needs Java 17 or newer on PATH (java -version)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/fleetgen run $(RUN_ARGS)

lint: install
	$(BIN)/ruff check fleetgen_spark tests jobs benchmarks
	$(BIN)/ruff format --check fleetgen_spark tests jobs benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/bench_throughput.py
	$(PY) benchmarks/bench_latency.py

clean-venv:
	rm -rf $(VENV)

cluster-up: install
	scripts/cluster.sh up

cluster-down:
	scripts/cluster.sh down
