"""Shared fixtures. Real market data lives outside the repo (licences): ../shared/data."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

# Soaks run by the tests (in this process and in the subprocesses it starts) skip the model
# arms, which multiply a soak's work by up to six; the tests of the arms ask for them with
# --model-arms (tests/test_model_arms.py, tests/test_real_truth.py).
os.environ.setdefault("MM_MODEL_ARMS", "none")

# Generated synthetic days go to a cache of this test session's own (each xdist worker has one),
# not the user's ~/.cache: a test then never depends on what an earlier run left there.
_CACHE = tempfile.mkdtemp(prefix="mm_sim-test-synthetic-")
os.environ.setdefault("MM_SYNTHETIC_CACHE_DIR", _CACHE)


@pytest.fixture(scope="session", autouse=True)
def _drop_synthetic_cache() -> Iterator[None]:
    yield
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _live_kernels_loaded(request: pytest.FixtureRequest) -> None:
    """Modules that run the fake exchange in the test's own event loop: the live client's
    kernels are loaded first. The client loads them when it starts (before it connects, which
    is what a real venue sees), but the process's first numba load takes most of a second, and
    an in-process fake exchange stalled by it sends the backlog as one burst afterwards (an
    8-frame queue then overflows at start-up). With the synthetic day read from the cache,
    nothing else loads numba earlier."""
    if Path(str(request.node.path)).stem in _IN_PROCESS_FAKE:
        from mm_sim.venues.binance.fastparse import warm as warm_parsers
        from mm_sim.venues.binance.sync import warm as warm_book

        warm_parsers()
        warm_book()


_IN_PROCESS_FAKE = {
    "test_fake_exchange",
    "test_live_client",
    "test_live_clock",
    "test_live_reorder",
    "test_live_restart",
    "test_live_modes",
    "test_live_routes",
    "test_live_errors",
    "test_live_engine",
    "test_live_fastpath",
}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the recorded market data; the test is skipped cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not present at {SHARED_DATA}")
    return SHARED_DATA


# Seconds each of the longest test files took (warm numba cache, two xdist workers, measured
# with --durations=0); the files not listed take a few seconds or less.
FILE_SECONDS = {
    "test_kernel_warmup": 87,
    "test_soak": 68,
    "test_live_soak": 56,
    "test_sweep": 41,
    "test_bench_smoke": 35,
    "test_live_routes": 30,
    "test_bad_inputs": 27,
    "test_bench_before": 27,
    "test_report_cmd": 25,
    "test_soak_identical": 25,
    "test_model_arms": 25,
    "test_walkforward": 22,
    "test_fake_exchange_behaviours": 20,
    "test_clock_model": 19,
    "test_inverse": 18,
    "test_fake_exchange": 18,
    "test_live_restart": 18,
    "test_run_dir_readers": 17,
    "test_inspect": 16,
    "test_book": 16,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, the rest in their usual order.

    Why: `make test` hands whole files to its workers in collection order
    (``--dist loadfile --no-loadscope-reorder``). By default xdist sends the files with the
    most tests first, which left the 87 s warm-up test, a file of three, to start last and run
    alone. Longest first lets the two workers finish within seconds of each other.
    """
    items.sort(key=lambda item: -FILE_SECONDS.get(Path(str(item.path)).stem, 0))
