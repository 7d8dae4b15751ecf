# Two entry points: `make demo` (set up, then LAPE on the built-in model) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/mlneurons: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $@

.PHONY: setup demo test bench lint
setup: $(BIN)/mlneurons

demo: setup
	$(BIN)/mlneurons lape --out runs/lape

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/stats_throughput.py

lint: setup
	$(BIN)/ruff check mlneurons tests examples bench
