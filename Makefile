# The two commands a newcomer needs: `make demo` and `make test` (both set up what they need).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-unit test-integration lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh plugins/*/pyproject.toml examples/*/pyproject.toml
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

demo: setup
	$(BIN)/dmoa-p2p swarm --nodes 3 --duration 10

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest -m "not integration"

test-integration: setup
	$(BIN)/pytest -m integration
