# The two commands of the README:  `make run`  and  `make test`  (and the quick tier, `make test-quick`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test test-quick setup setup-dev setup-quick system-deps lint typecheck pytest bench

# What the quick tier leaves out: tests that need a Docker engine, Chromium or torch (their markers,
# checked by tests/test_markers.py), and the long ones (slow).
QUICK := not docker and not browser and not torch and not slow

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

## Serve the models in models/ on http://127.0.0.1:8000 (serving dependencies only, no torch).
run: setup
	$(BIN)/weightserve serve --repository models --host 127.0.0.1 --port 8000

setup: $(BIN)/python
	$(BIN)/pip install -q -e .

## Everything the tests need (Debian packages first: installing the project compiles its C extension,
## then the dev and train extras), then lint, types and tests.
test: system-deps setup-dev lint typecheck pytest

## Every test that needs neither a Docker engine, nor Chromium, nor torch, nor minutes: for every change.
test-quick: setup-quick lint
	$(BIN)/python -m pytest -q -ra -m "$(QUICK)"

setup-quick: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

setup-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,train]' 'torch==2.13.0'

system-deps:
	PYTHON=$(PYTHON) bash deploy/ci/install-deps.sh

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy --strict service training weightserve bench

pytest:
	$(BIN)/python -m pytest -q -ra

## Throughput benchmark against bare onnxruntime and a naive server (on demand, not in CI).
bench: setup-dev
	$(BIN)/python -m bench
