# The two commands of the README. Each makes the virtual environment on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Runs the whole system locally; Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/m8 dev

## Lint, types, then every test against real servers.
test: $(STAMP) lint
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs services tests bench

clean:
	rm -rf $(VENV) .m8 .mypy_cache .pytest_cache .ruff_cache
