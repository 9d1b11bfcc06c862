# Two entry points for a newcomer (see README.md):
#   make compare   set up .venv, then train every preset for seeds 0-4 and print the before/after table
#   make test      set up .venv, then run the test suite
VENV ?= .venv
PYTHON ?= python3
# The CPU build that lies on this project's machines; override for another platform.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup compare test clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

compare: setup
	$(BIN)/reprolab compare --seeds 0-4

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
