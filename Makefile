# Two entry points for a newcomer (see README.md):
#   make pipeline  set up .venv, run the DVC pipeline (dvc repro), print the before/after report
#                  and the audit's verdict
#   make test      set up .venv, then run the test suite
# Also: make compare (all presets over seeds 0-4), make ui (MLflow UI on 127.0.0.1:5000),
#       make audit (the audit as in the pipeline), make history (the history audit),
#       make benchmark (tracking overhead; the audit serial vs parallel),
#       make server-start / server-stop (MLflow server on PostgreSQL, see README).
VENV ?= .venv
PYTHON ?= python3
# The CPU build that lies on this project's machines; override for another platform.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

# Stage commands in dvc.yaml call `reprolab`, so the venv's bin goes first on PATH.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: setup pipeline compare audit history test ui server-start server-stop server-status benchmark clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

pipeline: setup
	$(RUN) dvc repro
	@cat reports/comparison.md
	@echo "Audit (reports/audit/audit.md):"
	@grep '^\*\*Verdict' reports/audit/audit.md

compare: setup
	$(BIN)/reprolab compare --seeds 0-4

test: setup
	$(BIN)/python -m pytest

ui: setup
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --host 127.0.0.1 --port 5000

audit: setup
	$(RUN) dvc repro audit
	@cat reports/audit/audit.md

history: setup
	$(BIN)/reprolab audit --history

# A local MLflow server on PostgreSQL, artifacts served by the server (scripts/mlflow-server.sh;
# state in .mlflow-server/). Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:5001
server-start: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/mlflow-server.sh start

server-stop:
	scripts/mlflow-server.sh stop

server-status:
	scripts/mlflow-server.sh status

benchmark: setup
	$(BIN)/python benchmarks/tracking_overhead.py
	$(BIN)/python benchmarks/audit_parallel.py

clean:
	rm -rf $(VENV) .pytest_cache
