# The two commands of the README:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test setup setup-dev system-deps lint typecheck pytest bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

## Serve the models in models/ on http://127.0.0.1:8000 (serving dependencies only, no torch).
run: setup
	$(BIN)/weightserve serve --repository models --host 127.0.0.1 --port 8000

setup: $(BIN)/python
	$(BIN)/pip install -q -e .

## Everything the tests need (Debian packages, the dev and train extras), then lint, types and tests.
test: setup-dev system-deps lint typecheck pytest

setup-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,train]' 'torch==2.13.0'

system-deps:
	bash deploy/ci/install-deps.sh

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy --strict service training weightserve

pytest:
	$(BIN)/python -m pytest -q -ra

## Throughput benchmark against bare onnxruntime and a naive server (on demand, not in CI).
bench: setup-dev
	$(BIN)/python -m bench
