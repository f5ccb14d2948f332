# One command each: `make report` (the headless main job on the digits sample),
# `make test` (the suite under a virtual X server without the tests marked slow) and
# `make test-all` (every test: what CI runs). All set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= report_out

.PHONY: setup test test-all report lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU build of torch first, so the project's torch>=2.2 pulls nothing more
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(BIN)/ruff check src tests benchmarks sample_data
	$(BIN)/ruff format --check src tests benchmarks sample_data
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/npe2 validate napari-topolens

PYTEST := xvfb-run -a -s "-screen 0 1600x1000x24" $(BIN)/python -m pytest -q

test: lint
	$(PYTEST) -m "not slow"

# in two runs, so that each part prints its own time
test-all: lint
	$(PYTEST) -m "not slow"
	$(PYTEST) -m slow

report: setup
	$(BIN)/napari-topolens report --sample digits --out $(OUT)

clean:
	rm -rf $(VENV) $(OUT) build dist .pytest_cache
