"""The numba core and the plain-Python reference agree on generated event streams.

Streams are small and hostile on purpose: snapshots, level changes at and around our quotes,
trades at and through our prices, moves that cross the book without a trade, and feed lags that
make the two clocks disagree. Every config runs with both queue models and both latency modes.
The engine is fed in random slices (state must carry over exactly) with tiny output buffers (so
the grow-and-resume path runs too).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mm_sim.config import Overrides, Profile
from mm_sim.core.engine import Engine
from mm_sim.core.reference import RefEngine
from mm_sim.core.script import Script
from mm_sim.events import Instrument

TICK = 0.01
LOT = 0.001
INST = Instrument("TEST", "sim", TICK, LOT)
CENTER = 10_000  # tick of price 100.00


# Rule variants: (order type, decision points, matching section). The default model; the
# file-order model with plain limit orders; exchange order with a window small enough to clamp
# late events, no crossing fills and hftbacktest's through-print rule; a decision after every
# event (the streams put several events on one local time: dt = 0, snapshots).
VARIANTS: dict[str, tuple[str, str, dict[str, object]]] = {
    "default": ("post_only", "timestamp", {}),
    "file-limit": ("limit", "timestamp", {"event_order": "file"}),
    "clamp-limit-nocross-order": (
        "limit",
        "timestamp",
        {"reorder_window_ms": 3.0, "crossing_fills": False, "through_fill": "order"},
    ),
    "each-event": ("post_only", "event", {}),
}


def make_profile(
    model: str, mode: str, max_in_flight: int, max_pos: float, variant: str = "default"
) -> Profile:
    order_type, decide, matching = VARIANTS[variant]
    return Profile(
        quoting={
            "order_qty": 0.005,
            "base_half_spread_bps": 1.0,
            "gamma": 0.5,
            "horizon_s": 10.0,
            "vol_halflife_s": 1.0,
            "vol_sample_ms": 5.0,
            "impact_levels": 3,
            "order_type": order_type,
            "decide": decide,
        },
        matching=matching,
        inventory={"max_position": max_pos, "max_notional": 1e9},
        fees={"maker_bps": -0.5, "taker_bps": 4.0},
        latency={"mode": mode, "entry_ms": 2.0, "cancel_ms": 1.0, "ack_ms": 3.0, "feed_mult": 1.0},
        queue={"model": model, "power": 2.0},
        limiter={"max_in_flight": max_in_flight, "venue_budget": 6, "venue_window_ms": 100.0},
        mark_interval_ms=10.0,
    )


TIGHT = Overrides(
    min_interval_ms=0.0,
    replace_rate_per_min=600,
    base_spread_bps_delta=0.0,
    tail_age_ms=10.0,
    impact_cap_ratio=10.0,
    max_delta_ratio=5.0,
)
LOOSE = Overrides(
    min_interval_ms=4.0,
    replace_rate_per_min=60,
    base_spread_bps_delta=1.0,
    tail_age_ms=30.0,
    impact_cap_ratio=0.08,
    max_delta_ratio=0.5,
)

KINDS = ["depth", "depth", "depth", "trade", "trade", "churn", "churn", "cross", "snap"]
QTYS = [0.0, 0.001, 0.002, 0.004, 0.008, 0.02]
# Distance from the touch, in ticks, biased towards the levels our quotes sit on.
OFFSETS = [-1, 0, 0, 0, 1, 1, 1, 2, 3, 5]
step = st.tuples(
    st.sampled_from(KINDS),
    st.sampled_from([1, -1]),
    st.sampled_from(OFFSETS),
    st.sampled_from(QTYS),
    st.sampled_from([0.0, 0.3, 1.0, 2.0, 4.0, 15.0]),
    st.sampled_from([0.0, 0.5, 2.0, 6.0]),
)


def build_stream(steps: list[tuple[str, int, int, float, float, float]]) -> np.ndarray:
    sc = Script(TICK)
    sc.at(0.0, 0.0).snapshot(
        {CENTER - 1 - i: 0.004 * (i + 1) for i in range(5)},
        {CENTER + 1 + i: 0.004 * (i + 1) for i in range(5)},
    )
    now = 0.0
    c = CENTER  # centre of the latest snapshot; level changes are placed around it
    for kind, side, off, qty, dt, lag in steps:
        now += dt
        sc.at(now, lag)
        if kind == "depth":
            # around the touch on that side; offset -1 improves into the spread
            o = max(off, -1)
            t = c - 1 - o if side > 0 else c + 1 + o
            sc.depth(side, t, qty)
        elif kind == "trade":
            # a seller-initiated print on the bid side, a buyer-initiated one on the ask side
            t = c - 1 - off if side < 0 else c + 1 + off
            sc.trade(side, t, max(qty, 0.001))
        elif kind == "churn":
            # orders join behind us, some cancel (ahead or behind?), then a print at the level
            t = c - 1 - max(off, 0) % 2 if side > 0 else c + 1 + max(off, 0) % 2
            sc.depth(side, t, qty + 0.012)
            now += 0.5
            sc.at(now).depth(side, t, qty + 0.004)
            now += 0.5
            sc.at(now).trade(-side, t, 0.003 + qty / 2)
        elif kind == "cross":
            # an opposite level appears at or through the other side's touch: no trade printed
            # and is gone a moment later (it was matched away)
            t = c - 1 - abs(off) // 2 if side < 0 else c + 1 + abs(off) // 2
            sc.depth(side, t, max(qty, 0.002))
            now += 0.5
            sc.at(now).depth(side, t, 0.0)
        else:
            c = CENTER + off // 2
            sc.snapshot(
                {c - 1 - i: 0.003 * (i + 1) for i in range(3)},
                {c + 1 + i: 0.003 * (i + 1) for i in range(3)},
            )
    ev = sc.events()
    # File order is local-receive order: local times never go backwards.
    ev["local_ts"] = np.maximum.accumulate(ev["local_ts"])
    return ev


def assert_records_equal(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert a.dtype == b.dtype, what
    assert len(a) == len(b), f"{what}: {len(a)} records vs {len(b)}"
    for name in a.dtype.names or ():
        x, y = a[name], b[name]
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-12, err_msg=f"{what}.{name}")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"{what}.{name}")


CONFIGS = [
    (model, mode, mif, max_pos, ovr, list(VARIANTS)[n % len(VARIANTS)])
    for n, (model, mode, (mif, max_pos, ovr)) in enumerate(
        itertools.product(
            ("conservative", "probabilistic"),
            ("constant", "feed"),
            ((4, 0.007, TIGHT), (1, 1.0, LOOSE)),
        )
    )
]


def run_both(
    profile: Profile, ovr: Overrides, ev: np.ndarray, cuts: list[int]
) -> tuple[Engine, RefEngine, dict[str, np.ndarray], object]:
    eng = Engine(profile, ovr, INST, seed=3, n_ticks=4096, out_capacity=1, report_capacity=4096)
    parts: dict[str, list[np.ndarray]] = {"fills": [], "actions": [], "blocks": [], "marks": []}
    bounds = [0, *sorted(c % (len(ev) + 1) for c in cuts), len(ev)]
    for lo, hi in itertools.pairwise(bounds):
        res = eng.run(ev[lo:hi], flush=hi == len(ev))
        for k in parts:
            parts[k].append(getattr(res, k))
    got = {k: np.concatenate(v) for k, v in parts.items()}
    ref = RefEngine(profile, ovr, INST)
    want = ref.run(ev)
    return eng, ref, got, want


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}-mif{c[2]}-{c[5]}")
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    steps=st.lists(step, min_size=10, max_size=80),
    cuts=st.lists(st.integers(0, 10_000), max_size=3),
)
def test_kernel_matches_reference(cfg: tuple, steps: list, cuts: list[int]) -> None:
    model, mode, mif, max_pos, ovr, variant = cfg
    profile = make_profile(model, mode, mif, max_pos, variant)
    ev = build_stream(steps)
    eng, ref, got, want = run_both(profile, ovr, ev, cuts)
    for name in ("fills", "actions", "blocks", "marks"):
        assert_records_equal(got[name], getattr(want, name), name)
    assert eng.position == pytest.approx(ref.position, abs=1e-12)
    assert eng.cash == pytest.approx(ref.cash, abs=1e-9)
    c, rc = eng.counters(), ref.counters()
    for key in ("events", "decisions", "attempts", "blocks", "fills", "maker", "taker"):
        assert c[key] == rc[key], key
    for key in ("places", "replaces", "cancels"):
        assert c[key] == rc[key], key
    for key in (
        "cancels_done", "cancels_lost_race", "replaces_rejected", "no_decision",
        "post_only_rejected", "late_events_clamped",
    ):  # fmt: skip
        assert c["other"][key] == rc[key], key


def random_steps(
    rng: np.random.Generator, n: int
) -> list[tuple[str, int, int, float, float, float]]:
    return [
        (
            KINDS[rng.integers(len(KINDS))],
            int(rng.choice([1, -1])),
            int(rng.choice(OFFSETS)),
            float(rng.choice(QTYS)),
            float(rng.choice([0.0, 0.3, 1.0, 2.0, 4.0, 15.0])),
            float(rng.choice([0.0, 0.5, 2.0, 6.0])),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}-mif{c[2]}-{c[5]}")
def test_kernel_matches_reference_long_streams(cfg: tuple) -> None:
    """Longer seeded streams: hypothesis favours short lists, queue effects need long ones."""
    model, mode, mif, max_pos, ovr, variant = cfg
    profile = make_profile(model, mode, mif, max_pos, variant)
    rng = np.random.default_rng(2024)
    for _ in range(6):
        ev = build_stream(random_steps(rng, 300))
        cuts = [int(x) for x in rng.integers(0, len(ev), 2)]
        eng, ref, got, want = run_both(profile, ovr, ev, cuts)
        for name in ("fills", "actions", "blocks", "marks"):
            assert_records_equal(got[name], getattr(want, name), name)
        assert eng.cash == pytest.approx(ref.cash, abs=1e-9)


def test_generated_streams_exercise_the_traps() -> None:
    """The generator is not toothless: across a fixed sample it produces every kind of outcome."""
    rng = np.random.default_rng(7)
    seen = {
        "maker": 0,
        "taker": 0,
        "cancelled": 0,
        "lost": 0,
        "risk": 0,
        "throttle": 0,
        "min_interval": 0,
        "concurrency": 0,
        "post_only_rejected": 0,
        "clamped": 0,
        "batched": 0,  # events decided together with the next one (same local time)
    }
    for n in range(40):
        steps = random_steps(rng, 70)
        model, mode, mif, max_pos, ovr, variant = CONFIGS[n % len(CONFIGS)]
        ref = RefEngine(make_profile(model, mode, mif, max_pos, variant), ovr, INST)
        ref.run(build_stream(steps))
        c = ref.counters()
        seen["maker"] += c["maker"]
        seen["taker"] += c["taker"]
        seen["cancelled"] += c["cancels_done"]
        seen["lost"] += c["cancels_lost_race"] + c["replaces_rejected"]
        seen["post_only_rejected"] += c["post_only_rejected"]
        seen["clamped"] += c["late_events_clamped"]
        seen["batched"] += c["events"] - c["decisions"] - c["no_decision"]
        for r in ("risk", "throttle", "min_interval", "concurrency"):
            seen[r] += c["blocks"][r]
    assert all(v > 0 for v in seen.values()), seen
