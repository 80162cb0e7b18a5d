"""The Engine API the soak runner relies on: slices, checkpoints, hot-swap, marks, accounting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mm_sim.config import LimiterCfg, MatchingCfg, Overrides, Profile
from mm_sim.core.engine import ChunkResult, Engine
from mm_sim.core.records import ACTION_DTYPE, BLOCK_DTYPE, FILL_DTYPE, MARK_DTYPE, copy_rows
from mm_sim.core.script import Script
from mm_sim.errors import UserError
from mm_sim.events import EVENT_DTYPE, KIND_CLEAR, KIND_SNAPSHOT, Instrument
from mm_sim.feeds.synthetic import SyntheticParams, generate

PROF = Profile(
    quoting={"base_half_spread_bps": 0.3, "order_qty": 0.01},
    inventory={"max_position": 0.05, "max_notional": 1e7},
    latency={"mode": "feed", "entry_ms": 2.0, "cancel_ms": 2.0, "ack_ms": 3.0, "feed_mult": 0.5},
)
OVR = Overrides(
    min_interval_ms=20.0,
    replace_rate_per_min=1200.0,
    base_spread_bps_delta=0.0,
    tail_age_ms=500.0,
    impact_cap_ratio=0.5,
    max_delta_ratio=1.0,
)
NAMES = ("fills", "actions", "blocks", "marks")


@pytest.fixture(scope="module")
def feed() -> tuple[np.ndarray, Instrument]:
    return generate(SyntheticParams(), seed=7, duration_s=90)


def slices(events: np.ndarray, n: int, seed: int = 0) -> list[np.ndarray]:
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, len(events)), n - 1, False))
    return np.split(events, cuts)


def run_slices(eng: Engine, parts: list[np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {k: [] for k in NAMES}
    for n, part in enumerate(parts):
        res = eng.run(part, flush=n == len(parts) - 1)
        for k in NAMES:
            out[k].append(getattr(res, k))
    return {k: np.concatenate(v) for k, v in out.items()}


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_run_returns_owned_record_arrays(feed: Any) -> None:
    eng = Engine(PROF, OVR, feed[1], seed=1)
    res = eng.run(feed[0][:20000])
    assert isinstance(res, ChunkResult)
    dtypes = (FILL_DTYPE, ACTION_DTYPE, BLOCK_DTYPE, MARK_DTYPE)
    for name, dt in zip(NAMES, dtypes, strict=True):
        arr = getattr(res, name)
        # a copy of the engine's buffer, not a view into it
        assert arr.dtype == dt and arr.flags.writeable
        assert not np.shares_memory(arr, eng._out[name])
        assert len(arr) > 0, name
    res.fills["qty"][:] = 0.0  # the caller owns its copy
    assert eng.run(feed[0][20000:20001]).fills.size >= 0
    assert eng.counters()["events"] == 20001
    assert eng.run(np.zeros(0, dtype=EVENT_DTYPE)).fills.size == 0
    with pytest.raises(TypeError):
        eng.run(np.zeros(3))


@pytest.mark.parametrize("dtype", [EVENT_DTYPE, FILL_DTYPE, MARK_DTYPE])
@pytest.mark.parametrize("n", [0, 1, 5, 300, 3000])
def test_copy_rows_is_an_owned_writeable_copy(dtype: np.dtype, n: int) -> None:
    rng = np.random.default_rng(n)
    src = np.zeros(n + 7, dtype=dtype)
    src.view(np.uint8)[:] = rng.integers(0, 256, src.nbytes, dtype=np.uint8)
    for part in (src[3 : 3 + n], src[::2][:n]):  # contiguous (both copy paths), strided
        out = copy_rows(part)
        assert out.dtype == dtype and out.shape == (len(part),) and out.flags.writeable
        assert out.tobytes() == part.tobytes()
        assert not np.shares_memory(out, src)
        out.view(np.uint8)[:] = 0
        assert part.tobytes() != out.tobytes() or len(part) == 0 or not part.tobytes().strip(b"\0")


def test_same_inputs_give_identical_results(feed: Any) -> None:
    a = Engine(PROF, OVR, feed[1], seed=9)
    b = Engine(PROF, OVR, feed[1], seed=9)
    ra, rb = a.run(feed[0]), b.run(feed[0])
    for k in NAMES:
        assert same_bits(getattr(ra, k), getattr(rb, k)), k
    sa, sb = a.state_arrays(), b.state_arrays()
    assert all(same_bits(sa[k], sb[k]) for k in sa)


def test_slicing_does_not_change_anything(feed: Any) -> None:
    whole = Engine(PROF, OVR, feed[1], seed=1)
    rw = whole.run(feed[0])
    # tiny output buffers: every buffer has to grow mid-slice
    sliced = Engine(PROF, OVR, feed[1], seed=1, out_capacity=1)
    rs = run_slices(sliced, slices(feed[0], 37))
    for k in NAMES:
        assert same_bits(getattr(rw, k), rs[k]), k
    assert whole.counters() == sliced.counters()
    assert len(rw.fills) > 50


def test_checkpoint_restore_is_bit_identical(feed: Any, tmp_path: Path) -> None:
    parts = slices(feed[0], 9, seed=3)
    ref = Engine(PROF, OVR, feed[1], seed=5)
    want = run_slices(ref, parts)

    a = Engine(PROF, OVR, feed[1], seed=5)
    first = run_slices(a, parts[:4])
    np.savez(tmp_path / "ckpt.npz", **a.state_arrays())
    with np.load(tmp_path / "ckpt.npz") as z:
        state = {k: z[k] for k in z.files}
    b = Engine(PROF, OVR, feed[1], seed=5)
    b.load_state(state)
    second = run_slices(b, parts[4:])
    for k in NAMES:
        assert same_bits(np.concatenate([first[k], second[k]]), want[k]), k
    sb, sr = b.state_arrays(), ref.state_arrays()
    assert all(same_bits(sb[k], sr[k]) for k in sr)
    assert b.position == ref.position and b.cash == ref.cash


def test_checkpoint_carries_the_overrides_in_force(feed: Any) -> None:
    a = Engine(PROF, OVR, feed[1], seed=5)
    a.run(feed[0][:30000])
    a.set_overrides(OVR.model_copy(update={"base_spread_bps_delta": 1.0}))
    b = Engine(PROF, OVR, feed[1], seed=5)
    b.load_state(a.state_arrays())
    ra, rb = a.run(feed[0][30000:]), b.run(feed[0][30000:])
    assert same_bits(ra.actions, rb.actions)


def test_load_state_rejects_a_mismatched_checkpoint(feed: Any) -> None:
    a = Engine(PROF, OVR, feed[1], seed=5)
    state = a.state_arrays()
    other = Engine(PROF, OVR, feed[1], seed=5, n_ticks=1 << 12)
    with pytest.raises(UserError, match="'bid' has shape"):
        other.load_state(state)
    del state["oi"]
    with pytest.raises(UserError, match="missing"):
        a.load_state(state)


def test_hot_swap_applies_from_the_next_event(feed: Any) -> None:
    ev = feed[0]
    k = 30000
    ovr = OVR.model_copy(update={"min_interval_ms": 0.0, "replace_rate_per_min": 6000.0})
    wide = ovr.model_copy(update={"base_spread_bps_delta": 3.0, "max_delta_ratio": 10.0})
    # generous pacing so the reaction is a sent update rather than a refusal
    prof = PROF.model_copy(update={"limiter": LimiterCfg(max_in_flight=64, venue_budget=10**5)})
    a = Engine(prof, ovr, feed[1], seed=1)
    b = Engine(prof, ovr, feed[1], seed=1)
    ra1, rb1 = a.run(ev[:k]), b.run(ev[:k])
    assert same_bits(ra1.actions, rb1.actions)
    b.set_overrides(wide)
    _ra2, rb2 = a.run(ev[k:]), b.run(ev[k:])
    # the first decision after the swap already wants the wider quotes: it sends (or is
    # refused) an update at that very event
    first_decision = ev["local_ts"][k:][ev["kind"][k:] >= 3][0]
    reacted = np.concatenate([rb2.actions["ts"], rb2.blocks["ts"]]).min()
    assert reacted == first_decision
    at = k + int(np.argmax(ev["local_ts"][k:] == first_decision))
    probe = Engine(prof, ovr, feed[1], seed=1)
    probe.run(ev[: at + 1])
    sent = rb2.actions[rb2.actions["ts"] == first_decision]
    bid, ask = sent["price"][sent["side"] == 1], sent["price"][sent["side"] == -1]
    # half-spread 0.3 + 3.0 bp on each side (the inventory skew shifts both quotes equally)
    assert len(bid) == 1 and len(ask) == 1
    assert (ask[0] - bid[0]) / probe.mid * 1e4 > 6.4
    resting = a.mark_now()
    assert (resting["ask_quote"] - resting["bid_quote"])[0] / probe.mid * 1e4 < 2.0


def test_marks_follow_the_exchange_clock(feed: Any) -> None:
    eng = Engine(PROF, OVR, feed[1], seed=1)
    res = eng.run(feed[0])
    m = res.marks
    step = int(PROF.mark_interval_ms * 1e6)
    assert (m["ts"] % step == 0).all() and (np.diff(m["ts"]) == step).all()
    # the venue's clock runs from the first exchange time to the last receipt (two clocks)
    span = int(feed[0]["local_ts"][-1]) - int(feed[0]["exch_ts"][0])
    assert abs(len(m) - span / step) <= 1
    ok = ~np.isnan(m["mid"])
    assert ok[1:].all() and (m["best_bid"][ok] < m["best_ask"][ok]).all()
    now = eng.mark_now()
    assert now.dtype == MARK_DTYPE and now.shape == (1,)
    assert now["position"][0] == eng.position and now["cash"][0] == eng.cash
    assert now["ts"][0] == feed[0]["local_ts"][-1]


def test_mark_now_reads_the_state_the_next_driver_mark_records(feed: Any) -> None:
    """``mark_now`` (bundles built on the Python side) and the driver's marks see one state."""
    ev = feed[0]
    prof = PROF.model_copy(update={"matching": MatchingCfg(event_order="file")})
    step = int(PROF.mark_interval_ms * 1e6)
    boundary = (int(ev["exch_ts"][:5001].max()) // step + 1) * step
    k = 5001 + int(np.argmax(ev["exch_ts"][5001:] >= boundary))  # the event that crosses it
    assert ev["kind"][k - 1] not in (KIND_CLEAR, KIND_SNAPSHOT)  # no deferred decision between
    eng = Engine(prof, OVR, feed[1], seed=1)
    eng.run(ev[:k])
    now = eng.mark_now()
    (first,) = eng.run(ev[k : k + 1]).marks[:1]
    assert first["ts"] == boundary and now["ts"][0] == ev["exch_ts"][k - 1]
    for name in MARK_DTYPE.names or ():
        if name != "ts":
            assert now[name][0].tobytes() == first[name].tobytes(), name
    assert not np.isnan(now["bid_quote"][0]) and now["sigma"][0] > 0.0


def test_account_agrees_with_the_fill_records(feed: Any) -> None:
    eng = Engine(PROF, OVR, feed[1], seed=1)
    f = eng.run(feed[0]).fills
    signed = f["side"] * f["qty"]
    assert np.allclose(np.cumsum(signed), f["position_after"], atol=1e-12)
    assert eng.position == pytest.approx(signed.sum(), abs=1e-12)
    cash = -(f["side"] * f["price"] * f["qty"]).sum() - f["fee"].sum()
    assert eng.cash == pytest.approx(cash, rel=1e-12)
    maker = f["liquidity"] == 0
    assert np.allclose(f["fee"][maker], f["price"][maker] * f["qty"][maker] * -0.5e-4)
    c = eng.counters()
    assert c["fills"] == len(f) and c["maker"] + c["taker"] == len(f)
    # fills happen at or better than the quoted price for the maker side of the book
    assert (f["order_age_ns"] >= f["queue_ns"]).all() and (f["queue_ns"] >= 0).all()


def two_clock_script(lag_ms: float) -> Script:
    sc = Script(0.01, lag_ms=lag_ms)
    sc.at(0).snapshot({9999: 0.01}, {10001: 0.01})
    for t in range(1, 40):
        sc.at(float(t)).depth(-1, 10010, 0.001 * t)
    return sc


def arrival_ms(prof: Profile, sc: Script) -> float:
    """Exchange time at which our first bid started resting, from the first fill's clocks."""
    sc.at(39.5).trade(-1, 9990, 0.001)  # through our bid: fills it whatever the queue
    ovr = OVR.model_copy(update={"min_interval_ms": 1000.0})
    eng = Engine(prof, ovr, Instrument("T", "s", 0.01, 0.001), 0, n_ticks=4096)
    f = eng.run(sc.events()).fills
    return float((f["ts"][0] - f["queue_ns"][0] - sc.t0) / 1e6)


def test_latency_modes_constant_and_feed() -> None:
    const = Profile(latency={"mode": "constant", "entry_ms": 4.0})
    feed_mode = Profile(latency={"mode": "feed", "entry_ms": 4.0, "feed_mult": 2.0})
    # decided at local 0 + 10 ms feed lag; constant: +4 ms, feed: + 2 x 10 + 4 ms
    assert arrival_ms(const, two_clock_script(10.0)) == pytest.approx(14.0)
    assert arrival_ms(feed_mode, two_clock_script(10.0)) == pytest.approx(34.0)


def test_the_strategy_learns_of_fills_after_the_ack_latency() -> None:
    prof = Profile(
        quoting={"order_qty": 0.005, "base_half_spread_bps": 1.0, "gamma": 0.0},
        latency={"entry_ms": 1.0, "cancel_ms": 1.0, "ack_ms": 5.0},
    )
    inst = Instrument("T", "s", 0.01, 0.001)
    sc = Script(0.01).at(0).snapshot({9999: 0.01}, {10001: 0.01})
    sc.at(2).depth(-1, 10010, 0.01)
    sc.at(3).trade(-1, 9998, 0.002)  # fills 0.002 at exchange time 3 ms
    sc.at(4).depth(-1, 10011, 0.01)
    sc.at(9).depth(-1, 10012, 0.01)
    ev = sc.events()
    eng = Engine(prof, OVR, inst, seed=0, n_ticks=4096)
    eng.run(ev[ev["exch_ts"] <= sc.t0 + 4_000_000])
    assert eng.position == pytest.approx(0.002)  # the account is exact at once
    assert eng.position_view == 0.0  # the report is still in flight (3 + 5 ms)
    eng.run(ev[ev["exch_ts"] > sc.t0 + 4_000_000])
    assert eng.position_view == pytest.approx(0.002)


def test_profile_that_cannot_quote_is_a_user_error() -> None:
    bad = Profile(quoting={"order_qty": 0.0005})
    with pytest.raises(UserError, match="below one lot"):
        Engine(bad, OVR, Instrument("T", "s", 0.01, 0.001), seed=0)


def test_a_memory_mapped_feed_file_runs_the_same_compiled_driver(feed: Any, tmp_path: Path) -> None:
    from mm_sim.core.driver import run_chunk
    from mm_sim.events import open_feed, write_feed

    write_feed(tmp_path / "f.npy", feed[0][:20000], feed[1])
    mapped = open_feed(tmp_path / "f.npy")
    assert not mapped.events.flags.writeable
    a = Engine(PROF, OVR, feed[1], seed=1).run(mapped.events)
    b = Engine(PROF, OVR, feed[1], seed=1).run(feed[0][:20000])
    for k in NAMES:
        assert same_bits(getattr(a, k), getattr(b, k)), k
    assert len(run_chunk.signatures) == 1  # no second compilation for the read-only map
