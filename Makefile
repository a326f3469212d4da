# `make study`: set up everything on a fresh Debian machine and run the default study.
# `make test`:  set up the same way and run the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: study test setup data lint clean-results

study: setup data
	$(BIN)/snakemake --cores all

# The tests run on every core (pytest-xdist), a test file to a worker: a file's module fixtures
# (the end-to-end studies, the SLURM cluster) are built once; the longest files start first, in
# the order tests/conftest.py gives them. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= auto
test: setup data
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

setup: $(VENV)/.installed

# The virtual environment, rebuilt when the pinned requirements or the package's metadata change.
$(VENV)/.installed: envs/requirements.txt envs/requirements-test.txt envs/constraints.txt pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || $(MAKE) --no-print-directory debian-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r envs/requirements-test.txt -c envs/constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

.PHONY: debian-venv
debian-venv:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv python3-pip; \
	else echo "python3 -m venv is missing: run 'sudo apt-get install python3-venv' and try again" >&2; exit 1; fi

# Fashion-MNIST from Debian's package, where this machine can install it (root and apt).
data:
	@if [ -f $(FASHION_MNIST) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "note: Fashion-MNIST is not installed; run 'sudo apt-get install dataset-fashion-mnist'" \
	       "or set data.source / data.download in config.yaml (see README)" >&2; \
	fi

# Lint: what .ci/run checks beside the tests.
lint: setup
	$(BIN)/ruff check src tests benchmarks tools workflow/scripts
	$(BIN)/ruff format --check src tests benchmarks tools workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results
