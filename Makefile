# fleetgen-spark: `make run` starts the service, `make test` checks everything.
# Needs only Python 3.10+, Java 17+ and make; the rest goes into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Two stamps: `make run` needs only the package and its dependencies (RUN_STAMP); `make test`,
# `lint` and `bench` need the dev extras too (DEV_STAMP, about 1 GB more). Installing the dev
# extras also makes RUN_STAMP, so a later `make run` installs nothing.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

RUN_ARGS ?= --config small --speedup 900

.PHONY: install run test test-fast lint bench cluster-up cluster-down clean-venv

install: $(DEV_STAMP)

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "fleetgen-spark needs Python 3.10 or newer")'
	@java -version >/dev/null 2>&1 || { echo "fleetgen-spark needs Java 17 or newer on PATH (java -version)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# setuptools prints a banner of warnings on every editable install ("Editable installation ...
# Please be careful with folders ..."), even under --quiet: ours is an ordinary checkout.
$(RUN_STAMP) $(DEV_STAMP): export PYTHONWARNINGS = ignore:Editable installation

$(RUN_STAMP): setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	@touch $(RUN_STAMP)

$(DEV_STAMP): setup.cfg pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(RUN_STAMP) $(DEV_STAMP)

run: $(RUN_STAMP)
	$(BIN)/fleetgen run $(RUN_ARGS)

lint: install
	$(BIN)/ruff check fleetgen_spark tests jobs benchmarks
	$(BIN)/ruff format --check fleetgen_spark tests jobs benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest -q --durations=20

# No JVM at all: tests that use the spark or hdfs_server fixture are marked `spark` by tests/conftest.py,
# those that start Spark in a subprocess carry the mark by hand; the long end-to-end ones are `slow`.
test-fast: install
	$(BIN)/pytest -q -m "not spark and not slow" --durations=10

bench: install
	$(PY) benchmarks/bench_throughput.py
	$(PY) benchmarks/bench_latency.py
	$(PY) benchmarks/bench_process.py

clean-venv:
	rm -rf $(VENV)

cluster-up: install
	scripts/cluster.sh up

cluster-down:
	scripts/cluster.sh down
