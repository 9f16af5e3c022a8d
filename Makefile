# The two quick-start commands. Each creates .venv and installs the project first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint sim clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

## run: collect from the built-in exchange simulator into data/ (Ctrl-C stops)
run: $(STAMP)
	$(BIN)/jex-collector run --sim $(ARGS)

## test: lint, type-check and run the test suite
test: $(STAMP)
	$(BIN)/ruff check collector tests
	$(BIN)/ruff format --check collector tests
	$(BIN)/mypy
	$(BIN)/pytest -q $(ARGS)

## sim: serve the simulator on port 8900 for another process to use
sim: $(STAMP)
	$(BIN)/jex-collector sim --port 8900 --seed 1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
