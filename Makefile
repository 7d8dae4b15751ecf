# Entry points: `make demo` (set up, then the report: every method on the built-in model into
# runs/report with index.html), `make app` (the Streamlit app on that report) and `make test`.
# All three install the exact versions of requirements.lock (`make lock` regenerates it);
# `make test-latest` runs the tests against the newest releases in a separate venv.
PYTHON ?= python3.11
TORCH := 2.13.0
VENV := .venv
BIN := $(VENV)/bin
LATEST := .venv-latest

$(BIN)/mlneurons: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==$(TORCH)
	$(BIN)/pip install -r requirements.lock
	$(BIN)/pip install --no-deps -e .
	touch $@

.PHONY: setup demo app test test-latest lock bench lint
setup: $(BIN)/mlneurons

demo: setup
	$(BIN)/mlneurons report --out runs/report

app: setup
	$(BIN)/mlneurons app --run runs/report

test: setup
	$(BIN)/python -m pytest -q

# The lock leaves torch out (it is installed first, as torch==$(TORCH)); the CPU build's
# metadata keeps the CUDA wheels out of the lock.
$(BIN)/uv:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install uv

lock: $(BIN)/uv
	echo 'torch==$(TORCH)+cpu' > $(VENV)/torch-constraint.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra app --upgrade \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--find-links /opt/wheels -c $(VENV)/torch-constraint.txt --no-emit-package torch \
		--custom-compile-command 'make lock' -o requirements.lock

test-latest:
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --upgrade pip
	$(LATEST)/bin/pip install torch==$(TORCH)
	echo 'torch==$(TORCH)' > $(LATEST)/torch-constraint.txt
	$(LATEST)/bin/pip install --upgrade --upgrade-strategy eager -c $(LATEST)/torch-constraint.txt -e '.[dev,app]'
	$(LATEST)/bin/pip list --format=freeze | grep -iE '^(transformers|transformer-lens|babel|tokenizers|datasets)=='
	$(LATEST)/bin/python -m pytest -q

bench: setup
	$(BIN)/python bench/stats_throughput.py

# mypy reads its settings (strict) from pyproject.toml's [tool.mypy]
lint: setup
	$(BIN)/ruff check mlneurons tests examples bench apps
	$(BIN)/mypy mlneurons
