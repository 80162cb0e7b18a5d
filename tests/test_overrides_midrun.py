"""A mid-run override change takes effect in the engine.

Why: the tuner and the operator change overrides between chunks of one stream. A kernel that
kept an old value (say ``tail_age_ms``) would pass every test that fixes the overrides for a
whole run; here the change comes half-way, and the run must be identical up to it and differ
after it. (Agreement with the reference engine under such a change is the core's differential
suite's job: tests/test_core_differential.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
from test_core_differential import assert_records_equal

from mm_sim.config import load_overrides, load_profile
from mm_sim.core.engine import Engine
from mm_sim.feeds.synthetic import SyntheticParams, generate

NAMES = ("fills", "actions", "blocks", "marks")


@pytest.fixture(scope="module")
def stream():
    events, inst = generate(SyntheticParams(), seed=4, duration_s=8)
    # The conservative queue model: no random draws, so the two runs differ only by the change.
    profile = load_profile(cli={"queue.model": "conservative"})
    return events, inst, profile, load_overrides()


def _kernel(stream, field: str | None, value: float) -> tuple[dict, dict]:
    events, inst, profile, base = stream
    half = len(events) // 2
    eng = Engine(profile, base, inst, seed=3)
    first = eng.run(events[:half], flush=False)
    if field is not None:
        eng.set_overrides(base.model_copy(update={field: value}))
    second = eng.run(events[half:])
    return ({k: getattr(first, k) for k in NAMES}, {k: getattr(second, k) for k in NAMES})


@pytest.mark.parametrize(
    ("field", "value"),
    [("tail_age_ms", 20.0), ("min_interval_ms", 5.0), ("base_spread_bps_delta", 3.0)],
)
def test_a_mid_run_override_change_takes_effect(stream, field: str, value: float) -> None:
    same_a, kept = _kernel(stream, None, 0.0)
    same_b, changed = _kernel(stream, field, value)
    for k in NAMES:  # identical up to the change ...
        assert_records_equal(same_a[k], same_b[k], k)
    # ... and different after it: the new value reached the quoting.
    assert len(kept["actions"]) != len(changed["actions"]) or not np.array_equal(
        kept["actions"], changed["actions"]
    ), f"{field} changed mid-run but the engine acted as before"
