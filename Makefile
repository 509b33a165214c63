# rt_training: `make demo` runs the pipeline locally, `make test` runs the whole suite.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCHES := $(wildcard benchmarks/bench_*.py)
BENCH_TARGETS := $(patsubst benchmarks/bench_%.py,bench-%,$(BENCHES))
# The soak (30 minutes) and the sensors' memory (10 minutes) run only as `make bench-soak` and `make bench-sensors`.
QUICK_BENCHES := $(filter-out benchmarks/bench_soak.py benchmarks/bench_sensors.py,$(BENCHES))

# A plain pattern rule never applies to a phony target, so the bench-<name> targets are a static pattern rule.
.PHONY: help install demo test test-fast lint format validate bench $(BENCH_TARGETS) kafka-start kafka-stop clean

help:
	@echo "make demo     - start Kafka, the synthetic producer and the Dagster UI on http://127.0.0.1:3000"
	@echo "make test     - run the whole test suite (starts its own Kafka broker)"
	@echo "make bench    - run every benchmark but the soak and sensors; results in benchmarks/results/*.json"
	@echo "make bench-soak - the whole loop for 30 minutes at 2,000 events/s with broker restarts"
	@echo "make bench-sensors - memory of the sensors' work, 10 minutes"
	@echo "make lint     - ruff check and format check"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rt_training needs Python 3.11+; found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rt-training demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check rt_training rt_training_tests benchmarks
	$(BIN)/ruff format --check rt_training rt_training_tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format rt_training rt_training_tests benchmarks
	$(BIN)/ruff check --fix rt_training rt_training_tests benchmarks

validate: $(STAMP)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} $(BIN)/dagster definitions validate -w workspace.yaml

bench: $(STAMP)
	@set -e; for b in $(QUICK_BENCHES); do echo "== $$b"; $(BIN)/python $$b; done

$(BENCH_TARGETS): bench-%: $(STAMP)
	$(BIN)/python benchmarks/bench_$*.py

kafka-start: $(STAMP)
	$(BIN)/rt-training kafka start

kafka-stop: $(STAMP)
	$(BIN)/rt-training kafka stop

clean:
	rm -rf .data .dagster_home benchmarks/results/*.json .pytest_cache .ruff_cache
