# The two commands of the README:
#   make pipeline   set up .venv, run the DVC pipeline (dvc repro), print the report and the audit's verdict
#   make test       set up .venv, check lint, formatting and types, run every test (what CI runs)
# Also: make test-fast (unit tests, a minute or two), make check (ruff + mypy),
#       make compare (all presets over seeds 0-4), make audit, make history,
#       make ui (MLflow UI on 127.0.0.1:5000, with the links to open), make screenshots (docs/*.png),
#       make server-start / server-stop (docs/tracking.md),
#       make benchmark (pipeline overhead, tracking cost, audit scaling, the audit's runs on top of an
#       earlier one, repro after a change, reproduce),
#       make lock (update requirements.lock from pyproject.toml's ranges).
VENV ?= .venv
PYTHON ?= python3
# The CPU build that lies on this project's machines; override for another platform.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

# Stage commands in dvc.yaml call `python -m reprolab.stages...`: the venv's bin goes first on PATH.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: setup lock pipeline compare audit history test test-fast check ui screenshots server-start server-stop server-status benchmark clean
setup: $(VENV)/.installed

# The versions in requirements.lock, torch's beside them: every clone runs what the runs recorded.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[dev]"
	touch $@

# Update the lock: a fresh environment from pyproject.toml's ranges, frozen (torch stays pinned apart).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	{ sed -n '1,2p' requirements.lock; .lock-venv/bin/python -m pip freeze --exclude-editable | grep -iv '^torch=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lock-venv

pipeline: setup
	$(RUN) dvc repro
	@cat reports/comparison.md
	@echo "Audit (reports/audit/audit.md):"
	@grep '^\*\*Verdict' reports/audit/audit.md
	@$(RUN) $(BIN)/python scripts/against_committed.py

compare: setup
	$(BIN)/reprolab compare --seeds 0-4

check: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: check
	$(RUN) $(BIN)/python -m pytest

test-fast: setup
	$(RUN) $(BIN)/python -m pytest -m "not slow and not server"

ui: setup
	$(RUN) $(BIN)/reprolab ui

# The README's screenshots of the MLflow UI, from the pipeline's store (after make pipeline).
screenshots: setup
	$(BIN)/python scripts/check_mlflow_ui.py --store "sqlite:///$(CURDIR)/mlflow.db" --screenshots docs

audit: setup
	$(RUN) dvc repro audit
	@cat reports/audit/audit.md

history: setup
	$(BIN)/reprolab audit --history

# A local MLflow server on PostgreSQL (scripts/mlflow-server.sh; state in .mlflow-server/).
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:5001
server-start: setup
	$(RUN) scripts/mlflow-server.sh start

server-stop:
	scripts/mlflow-server.sh stop

server-status:
	scripts/mlflow-server.sh status

benchmark: setup
	$(RUN) $(BIN)/python benchmarks/pipeline_overhead.py
	$(BIN)/python benchmarks/tracking_overhead.py
	$(BIN)/python benchmarks/audit_parallel.py
	$(BIN)/python benchmarks/audit_shapley.py
	$(RUN) $(BIN)/python benchmarks/repro_after_change.py
	$(RUN) $(BIN)/python benchmarks/reproduce.py
	$(RUN) $(BIN)/python benchmarks/numerics.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
