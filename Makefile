# The same targets serve a new user, a developer and CI (.ci/run calls `make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := cti crm_sync screenpop ivr pbxsim cti_bench cti_app tests

.PHONY: install demo test test-dates lint bench clean

$(BIN)/cti: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/cti

install: $(BIN)/cti

demo: install
	$(BIN)/cti demo

lint: install
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest -q

# The suite 400 days ahead, across a New Year and a summer-time change (needs faketime).
test-dates: lint
	PYTEST=$(BIN)/pytest tests/on_other_days.sh

bench: install
	$(BIN)/cti bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
