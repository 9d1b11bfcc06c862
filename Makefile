# Two entry points for a newcomer (see README.md):
#   make pipeline  set up .venv, run the DVC pipeline (dvc repro), print the before/after report
#   make test      set up .venv, then run the test suite
# Also: make compare (all presets over seeds 0-4), make ui (MLflow UI on 127.0.0.1:5000),
#       make benchmark (tracking overhead).
VENV ?= .venv
PYTHON ?= python3
# The CPU build that lies on this project's machines; override for another platform.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

# Stage commands in dvc.yaml call `reprolab`, so the venv's bin goes first on PATH.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: setup pipeline compare test ui benchmark clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

pipeline: setup
	$(RUN) dvc repro
	@cat reports/comparison.md

compare: setup
	$(BIN)/reprolab compare --seeds 0-4

test: setup
	$(BIN)/python -m pytest

ui: setup
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --host 127.0.0.1 --port 5000

benchmark: setup
	$(BIN)/python benchmarks/tracking_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
