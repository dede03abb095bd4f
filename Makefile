# The two commands of the README (`make run`, `make test`). Each sets up the development
# workspace on first use: uv (in .uv/, the same version as uv.lock's dev group) installs
# every m8 distribution editable into .venv from uv.lock, with byte code compiled (as pip
# does; without it every process compiles its libraries from source).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := .uv/bin/uv
STAMP  := $(VENV)/.installed
PROJECTS := pyproject.toml uv.lock $(wildcard libs/*/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml)

.PHONY: run test test-fast lint install lock clean

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet 'uv==0.13.9'

$(STAMP): $(PROJECTS) | $(UV)
	$(UV) sync --locked --compile-bytecode --python $(PYTHON)
	touch $(STAMP)

install: $(STAMP)

## After changing a dependency in any pyproject.toml.
lock: | $(UV)
	$(UV) lock

## Runs the whole system locally; Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/m8 dev

## Lint, types, then every test against real servers: every tier.
test: $(STAMP) lint
	$(BIN)/python -m pytest tests

## For daily work: lint, types, unit, integration and e2e tests; not the slow tiers
## (chaos, fuzz, scale, packaging: see pyproject.toml `markers`).
test-fast: $(STAMP) lint
	$(BIN)/python -m pytest tests -m "not (chaos or fuzz or scale or packaging or containers)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs services tools tests bench
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .uv .m8 .mypy_cache .pytest_cache .ruff_cache
