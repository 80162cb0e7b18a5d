"""Checkpoints store large arrays without their zero ends, and restore them bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from mm_sim.config import Overrides
from mm_sim.core.engine import Engine
from mm_sim.feeds.synthetic import SyntheticParams, generate
from mm_sim.runtime.checkpoint import TRIM_BYTES, pack_state, unpack_state
from tests.test_core_engine import PROF


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_round_trip_is_bit_exact_and_small() -> None:
    n = TRIM_BYTES // 8 + 1000
    a = np.zeros(n)
    a[500] = -0.0  # a zero that is not all zero bits
    a[900] = np.nan
    a[2000] = 1.5
    b = np.zeros(n, dtype=np.int64)
    b[-1] = 7  # a span reaching the end
    state = {
        "a": a, "b": b, "none": np.zeros(n), "small": np.zeros(10), "two_d": np.zeros((n, 2)),
        "records": np.zeros(3, dtype=[("x", "<i8"), ("y", "<f8")]),
    }  # fmt: skip
    packed = pack_state(state)
    assert len(packed["a"]) == 2000 - 500 + 1 and len(packed["b"]) == 1
    assert len(packed["none"]) == 0
    assert packed["small"] is state["small"] and packed["two_d"] is state["two_d"]
    back = unpack_state(packed)
    assert set(back) == set(state)
    assert all(same_bits(back[k], state[k]) for k in state)
    assert unpack_state(state) == state  # a checkpoint written before packing


def test_a_span_outside_its_array_is_refused() -> None:
    packed = pack_state({"a": np.r_[np.zeros(TRIM_BYTES), 1.0]})
    packed["a#span"] = np.array([TRIM_BYTES, TRIM_BYTES], dtype=np.int64)
    with pytest.raises(ValueError, match="outside its length"):
        unpack_state(packed)


def test_an_engine_resumes_from_a_packed_state() -> None:
    ev, inst = generate(SyntheticParams(), seed=3, duration_s=120)
    a = Engine(PROF, Overrides(), inst, seed=1)
    a.run(ev[: len(ev) // 2], flush=False)
    state = a.state_arrays()
    packed = pack_state(state)
    assert sum(v.nbytes for v in packed.values()) < sum(v.nbytes for v in state.values()) / 20
    b = Engine(PROF, Overrides(), inst, seed=1)
    b.load_state(unpack_state(packed))
    ra, rb = a.run(ev[len(ev) // 2 :]), b.run(ev[len(ev) // 2 :])
    for k in ("fills", "actions", "blocks", "marks"):
        assert same_bits(getattr(ra, k), getattr(rb, k)), k
    sa, sb = a.state_arrays(), b.state_arrays()
    assert all(same_bits(sa[k], sb[k]) for k in sa)
