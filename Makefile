# Two commands on a fresh machine with only python3: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# test processes: the suite is mostly single-threaded, so two workers use a 2-core machine
TEST_WORKERS ?= 2

# Stage commands (`medimg ...`, `dvc ...`) resolve inside the project's virtual environment.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test bench lint format mlflow-ui clean-demo help

help:
	@echo "make demo   - install, generate phantoms, run the whole pipeline, print a summary"
	@echo "make test   - install with the dev extra and run the test suite"
	@echo "make bench  - training, ingest, gate and retrain benchmarks, each against its baseline (about 35 min)"
	@echo "make lint   - ruff"
	@echo "make mlflow-ui - open the MLflow UI on the demo's results"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# uv resolves and installs the heavy stack (TensorFlow, MLflow, Prefect, DVC, GX) in seconds;
# pip is the fallback when uv cannot be installed.
$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv \
	  && $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]' \
	  || $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medimg demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# Figures and how to read them: docs/performance.md. Each benchmark's last line is JSON.
bench: $(STAMP)
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/gate.py
	$(BIN)/python benchmarks/retrain.py

lint: $(STAMP)
	$(BIN)/ruff check medimg flows tests benchmarks
	$(BIN)/ruff format --check medimg flows tests

format: $(STAMP)
	$(BIN)/ruff format medimg flows tests
	$(BIN)/ruff check --fix medimg flows tests

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --port 5000

# Removes what the demo wrote in the repository root (never anything under data/raw but the
# phantoms it generated itself).
clean-demo:
	rm -rf mlflow.db mlartifacts reports models/classifier data/manifest.parquet data/processed \
	  data/store data/.ingest_cache.json data/.private \
	  data/quarantine dvc.lock
	@if [ -f data/raw/.phantoms ]; then rm -rf data/raw data/raw.dvc; fi
