"""Shared fixtures. Real market data lives outside the repo (licences): ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

# Soaks run by the tests (in this process and in the subprocesses it starts) skip the model
# arms, which multiply a soak's work by up to six; the tests of the arms ask for them with
# --model-arms (tests/test_model_arms.py, tests/test_real_truth.py).
os.environ.setdefault("MM_MODEL_ARMS", "none")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the recorded market data; the test is skipped cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not present at {SHARED_DATA}")
    return SHARED_DATA
