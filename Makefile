# The two commands a newcomer needs: `make demo` and `make test` (both set up what they need).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-unit test-integration test-netns lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh plugins/*/pyproject.toml \
		examples/*/pyproject.toml
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

# three nodes on 127.0.0.1, each with llama.cpp and the embedded SmolLM2 model, answer together
demo: setup
	$(BIN)/dmoa-p2p swarm --nodes 3 --ask "Why is the sky blue?" --layers 1 --proposers 2 \
		--max-tokens 128 --trace

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest -m "not integration and not netns"

test-integration: setup
	$(BIN)/pytest -m integration

# the NAT lab: real nodes in network namespaces behind NAT routers (root; skipped otherwise)
test-netns: setup
	$(BIN)/pytest -m netns
