# KeyTrail: two commands do all set-up on a fresh machine.
#   make demo   installs, then runs the main job on the embedded default (chDB + SQLite)
#   make test   installs what tests need (Python deps, PostgreSQL, Kafka jars), then runs pytest

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint install clean-data

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "KeyTrail needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-installs only when pyproject.toml changed (idempotent).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/keytrail demo

test: $(STAMP)
	bash infra/install-test-deps.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check keytrail schemas producers stream_processors keystore console sql tests
	$(BIN)/mypy keytrail schemas producers stream_processors keystore console sql

clean-data:
	rm -rf .keytrail
