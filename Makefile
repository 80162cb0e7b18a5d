# Each user-facing target depends on the venv stamp, so `make soak` and `make test`
# are single commands on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Kernels are cached next to the venv so a second run starts without recompiling.
export NUMBA_CACHE_DIR ?= $(CURDIR)/.venv/numba-cache

.PHONY: setup soak test lint bench bench-quick fmt clean live-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

soak: $(STAMP)
	$(PY) -m mm_sim soak $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check mm_sim tests benchmarks
	$(VENV)/bin/ruff format --check mm_sim tests benchmarks
	$(VENV)/bin/mypy mm_sim

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix mm_sim tests benchmarks
	$(VENV)/bin/ruff format mm_sim tests benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks.run $(ARGS)

bench-quick: $(STAMP)
	$(PY) -m benchmarks.run --quick $(ARGS)

clean:
	rm -rf $(VENV) artifacts .pytest_cache .mypy_cache .ruff_cache
