# Two commands on a fresh machine with only python3: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# test processes: the suite is mostly single-threaded, so two workers use a 2-core machine
TEST_WORKERS ?= 2

# Stage commands (`medimg ...`, `dvc ...`) resolve inside the project's virtual environment.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install browser demo test bench lint format mlflow-ui clean-demo help

help:
	@echo "make demo   - install, generate phantoms, run the whole pipeline, print a summary"
	@echo "make test   - install with the dev extra and run the test suite"
	@echo "make bench  - training, ingest, gate, retrain, serving and quality (real films, needs ../shared/data) benchmarks, each against its baseline (about 70 min)"
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

# The browser tests drive Debian's chromium (Playwright cannot download its own here): installed
# when missing, as root or through sudo.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium for the browser tests (apt-get install -y chromium)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; } \
	  || { echo "could not install chromium; run: sudo apt-get install -y chromium" >&2; exit 1; }; }

# Whole files go to one worker (their module fixtures are built once), in collection order:
# the long integration files first, the many short unit files after, so neither worker idles
# at the end (xdist's default reorder would start the files with the most tests first).
test: $(STAMP) browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Figures and how to read them: docs/performance.md. Each benchmark's last line is JSON.
bench: $(STAMP)
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/gate.py
	$(BIN)/python benchmarks/retrain.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/quality.py

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
