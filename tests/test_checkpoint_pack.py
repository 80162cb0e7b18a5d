"""Checkpoints store large arrays without their zero ends, and restore them bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mm_sim.config import Overrides
from mm_sim.core.engine import Engine
from mm_sim.feeds.synthetic import SyntheticParams, generate
from mm_sim.runtime.checkpoint import TRIM_BYTES, pack_state, read_npz, unpack_state
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


def test_a_span_that_does_not_fit_is_refused() -> None:
    good = pack_state({"a": np.r_[np.zeros(TRIM_BYTES), 1.0, 2.0]})
    assert good["a#span"].tolist() == [TRIM_BYTES, 2, TRIM_BYTES + 2]
    bad_spans = [
        [TRIM_BYTES + 1, 2, TRIM_BYTES + 2],  # past the end
        [TRIM_BYTES, 3, TRIM_BYTES + 2],  # the array came back shorter than it was stored
        [-1, 2, TRIM_BYTES + 2],
        [0, 2, 1 << 40],  # a garbled length: no 8 TB of zeros
        [TRIM_BYTES, TRIM_BYTES + 2],  # not (first, kept, length)
    ]
    for span in bad_spans:
        with pytest.raises(ValueError, match="span"):
            unpack_state({**good, "a#span": np.array(span, dtype=np.int64)})
    with pytest.raises(ValueError, match="reserved"):
        pack_state({"x#span": np.zeros(3)})


def test_a_checkpoint_member_shortened_on_disk_is_refused(tmp_path: Path) -> None:
    """numpy reads only the elements a member's header announces: the CRC check catches the
    rest of a damaged member, which would otherwise load as zeros."""
    big = np.zeros(TRIM_BYTES // 8 + 100)
    big[10:900] = np.arange(1.0, 891.0)
    path = tmp_path / "ck.npz"
    np.savez(path, **pack_state({"book": big}))
    assert read_npz(path)["book"].tobytes() == pack_state({"book": big})["book"].tobytes()
    raw = bytearray(path.read_bytes())
    at = raw.find(b"'shape': (890,)")
    assert at > 0
    raw[at : at + 15] = b"'shape': (190,)"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        read_npz(path)


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
