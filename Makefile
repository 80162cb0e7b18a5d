# Each user-facing target depends on the venv stamp, so `make soak` and `make test`
# are single commands on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# hftbacktest (extra `peer`) pins numpy<2.3, so the peer comparison has a venv of its own with
# mm_sim installed too: both simulators run in one process on the same numpy and numba.
PEER_VENV  := .venv-peer
PEER_PY    := $(PEER_VENV)/bin/python
PEER_STAMP := $(PEER_VENV)/.installed
# Kernels are cached next to the venv so a second run starts without recompiling.
export NUMBA_CACHE_DIR ?= $(CURDIR)/.venv/numba-cache

.PHONY: setup soak test lint bench bench-quick fmt clean live-demo sweep peer-setup peer test-peer

setup: $(STAMP)

# The kernels' own packages go first; their compile then runs beside pip's install of the rest
# (most of the install), so the first soak and the tests find them compiled
# (mm_sim/kernel_warmup.py). A failed warm-up is not fatal: the first run compiles instead.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m mm_sim.kernel_warmup --deps > $(VENV)/kernel-requirements.txt
	$(PY) -m pip install -q -r $(VENV)/kernel-requirements.txt
	@echo "pip install -e '.[dev]', compiling the kernels meanwhile (log: $(VENV)/kernel-warmup.log)"
	@$(PY) -m mm_sim.kernel_warmup > $(VENV)/kernel-warmup.log 2>&1 & warm=$$!; \
	trap 'kill $$warm 2>/dev/null' INT TERM; \
	$(PY) -m pip install -q -e '.[dev]' || { kill $$warm 2>/dev/null; exit 1; }; \
	wait $$warm && cat $(VENV)/kernel-warmup.log || \
	echo "kernel warm-up failed (see $(VENV)/kernel-warmup.log): the first run compiles them"
	touch $(STAMP)

soak: $(STAMP)
	$(PY) -m mm_sim soak $(ARGS)

sweep: $(STAMP)
	$(PY) -m mm_sim sweep --grid sweeps/example.toml $(ARGS)

# One pytest worker per core, each taking whole test files (their module fixtures stay shared),
# the longest files first (tests/conftest.py).
test: $(STAMP)
	$(PY) -m pytest -n auto --dist loadfile --no-loadscope-reorder $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check mm_sim tests benchmarks
	$(VENV)/bin/ruff format --check mm_sim tests benchmarks
	$(VENV)/bin/mypy mm_sim benchmarks

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix mm_sim tests benchmarks
	$(VENV)/bin/ruff format mm_sim tests benchmarks

# The full bench runs the hftbacktest comparison from .venv-peer (created on first use, ~40 s);
# if it cannot be installed (offline), the bench runs on and says the peer is not installed.
bench: $(STAMP)
	@$(MAKE) --no-print-directory peer-setup || echo "note: .venv-peer could not be set up; the bench runs without the hftbacktest comparison"
	$(PY) -m benchmarks.run $(ARGS)

peer-setup: $(PEER_STAMP)

$(PEER_STAMP): pyproject.toml
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_PY) -m pip install -q --upgrade pip
	$(PEER_PY) -m pip install -q -e '.[dev,peer]'
	touch $(PEER_STAMP)

# The hftbacktest tests (tests/test_peer.py) need hftbacktest, which lives in .venv-peer only:
# under `make test` they skip; `make test-peer` runs them there.
test-peer: $(PEER_STAMP)
	NUMBA_CACHE_DIR=$(CURDIR)/$(PEER_VENV)/numba-cache $(PEER_PY) -m pytest tests/test_peer.py $(ARGS)

# The peer comparison alone (synthetic feed and every real data set), JSON on stdout.
peer: $(PEER_STAMP)
	NUMBA_CACHE_DIR=$(CURDIR)/$(PEER_VENV)/numba-cache $(PEER_PY) -m benchmarks.peer --real $(ARGS)

bench-quick: $(STAMP)
	$(PY) -m benchmarks.run --quick $(ARGS)

clean:
	rm -rf $(VENV) $(PEER_VENV) artifacts .pytest_cache .mypy_cache .ruff_cache

# Offline tour of the live path: a fake Binance on 127.0.0.1 at 20x real time, a short
# paper-trading soak against it (2 x 0.5 exchange-clock minutes), then the server is stopped.
LIVE_PORT ?= 8765
live-demo: $(STAMP)
	@mkdir -p artifacts; $(PY) -m mm_sim fake-exchange --port $(LIVE_PORT) --speed 20 > artifacts/live-demo-fake.log 2>&1 & \
	  pid=$$!; trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null' EXIT; \
	  for i in $$(seq 50); do grep -q listening artifacts/live-demo-fake.log 2>/dev/null && break; sleep 0.2; done; \
	  cat artifacts/live-demo-fake.log; \
	  $(PY) -m mm_sim soak --feed ws://127.0.0.1:$(LIVE_PORT) --iterations 2 \
	    --iteration-minutes 0.5 --artifacts artifacts/live-demo $(ARGS)
