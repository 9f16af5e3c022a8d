# The two quick-start commands. Each creates .venv and installs the project first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# run needs the package only; test adds the dev tools (pytest, mypy, ruff, playwright, ...).
RUN_STAMP  := $(VENV)/.run-stamp
STAMP      := $(VENV)/.installed-stamp

CHROMIUM := /usr/bin/chromium

.PHONY: run test lint sim clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP) $(RUN_STAMP)

## run: collect from the built-in exchange simulator into data/ (Ctrl-C stops)
run: $(RUN_STAMP)
	$(BIN)/jex-collector run --sim $(ARGS)

## browser: Debian's chromium for the report's screenshot test (installed when run as root)
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium for the report screenshot test (tests/test_report.py)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
	  || echo "warning: could not install chromium; the screenshot test skips (fails in CI)"; \
	else \
	  echo "note: $(CHROMIUM) is missing, so the report screenshot test is skipped;"; \
	  echo "      install it with: sudo apt-get install --no-install-recommends chromium"; \
	fi

## test: lint, type-check and run the test suite (installs chromium first when root)
test: $(STAMP) browser
	$(BIN)/ruff check collector tests
	$(BIN)/ruff format --check collector tests
	$(BIN)/mypy
	$(BIN)/pytest -q $(ARGS)

## sim: serve the simulator on port 8900 for another process to use
sim: $(RUN_STAMP)
	$(BIN)/jex-collector sim --port 8900 --seed 1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
