"""The peer comparison: feed conversion, the shared decision kernel, and (when the optional
``peer`` extra is installed, i.e. in ``.venv-peer``) a small mm_sim vs hftbacktest run.

The conversion and the decision kernel are tested without hftbacktest; the end-to-end tests
skip cleanly where it is not importable. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks import peer, peer_convert, peer_strategy
from benchmarks.data import synthetic
from benchmarks.peer_convert import (
    BUY_EVENT,
    DEPTH_CLEAR_EVENT,
    DEPTH_EVENT,
    DEPTH_SNAPSHOT_EVENT,
    EXCH_EVENT,
    LOCAL_EVENT,
    SELL_EVENT,
    TRADE_EVENT,
)
from mm_sim.config import LatencyMode, Overrides, load_profile
from mm_sim.core.engine_params import make_params
from mm_sim.errors import FeedError
from mm_sim.events import (
    EVENT_DTYPE,
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
    Instrument,
)

REPO = Path(__file__).resolve().parent.parent
INST = Instrument("T", "test", 0.1, 0.001)


def _ev(rows: list[tuple[int, int, float, float, int, int]]) -> np.ndarray:
    return np.array(rows, dtype=EVENT_DTYPE)


@pytest.fixture(scope="module")
def feed() -> np.ndarray:
    return synthetic(20.0).events


# ------------------------------------------------------------------------------------------------
# Conversion
# ------------------------------------------------------------------------------------------------


def test_each_kind_and_side_maps_to_hftbacktest_flags() -> None:
    e = _ev(
        [
            (100, 150, 0.0, 0.0, KIND_CLEAR, 0),
            (100, 150, 10.0, 1.0, KIND_SNAPSHOT, 1),
            (100, 150, 10.2, 2.0, KIND_SNAPSHOT, -1),
            (110, 160, 10.1, 0.0, KIND_DEPTH, -1),
            (120, 170, 10.0, 0.5, KIND_TRADE, 1),
            (130, 180, 10.0, 0.25, KIND_TRADE, -1),
        ]
    )
    rows, st = peer_convert.to_hftbacktest(e)
    both = EXCH_EVENT | LOCAL_EVENT
    assert rows["ev"].tolist() == [
        both | DEPTH_CLEAR_EVENT,
        both | DEPTH_SNAPSHOT_EVENT | BUY_EVENT,
        both | DEPTH_SNAPSHOT_EVENT | SELL_EVENT,
        both | DEPTH_EVENT | SELL_EVENT,
        both | TRADE_EVENT | BUY_EVENT,
        both | TRADE_EVENT | SELL_EVENT,
    ]
    assert rows["px"].tolist() == e["price"].tolist()
    assert rows["qty"].tolist() == e["qty"].tolist()
    assert rows["exch_ts"].tolist() == e["exch_ts"].tolist()
    assert rows["local_ts"].tolist() == e["local_ts"].tolist()
    assert st.per_kind == {"clear": 1, "snapshot": 2, "depth": 1, "trade": 2}
    assert (st.rows, st.both_flags, st.split) == (6, 6, 0)


def test_synthetic_feed_round_trips_through_both_streams(feed: np.ndarray) -> None:
    rows, st = peer_convert.to_hftbacktest(feed)
    assert st.split == 0 and st.rows == len(feed)
    np.testing.assert_array_equal(peer_convert.local_stream(rows), feed)
    np.testing.assert_array_equal(peer_convert.exchange_stream(rows), feed)
    kinds = rows["ev"] & np.uint64(peer_convert.KIND_MASK)
    for kind, code in ((KIND_DEPTH, DEPTH_EVENT), (KIND_TRADE, TRADE_EVENT)):
        assert int(np.sum(kinds == code)) == int(np.sum(feed["kind"] == kind))


def test_late_exchange_times_get_an_exchange_only_copy_in_exchange_order() -> None:
    # Local order; exch_ts goes backwards twice (a trade stamped earlier than a depth before it).
    e = _ev(
        [
            (100, 200, 10.0, 1.0, KIND_DEPTH, 1),
            (300, 310, 10.2, 1.0, KIND_DEPTH, -1),
            (150, 320, 10.1, 0.1, KIND_TRADE, 1),
            (300, 330, 10.0, 2.0, KIND_DEPTH, 1),
            (120, 340, 10.0, 0.2, KIND_TRADE, -1),
            (400, 400, 10.3, 1.0, KIND_DEPTH, -1),
        ]
    )
    rows, st = peer_convert.to_hftbacktest(e)
    assert st.split == 2 and st.rows == 8 and st.both_flags == 4
    np.testing.assert_array_equal(peer_convert.local_stream(rows), e)
    order = np.argsort(e["exch_ts"], kind="stable")
    np.testing.assert_array_equal(peer_convert.exchange_stream(rows), e[order])
    ex = rows["ev"] & np.uint64(EXCH_EVENT) != 0
    lo = rows["ev"] & np.uint64(LOCAL_EVENT) != 0
    assert (np.diff(rows["exch_ts"][ex]) >= 0).all()
    assert (np.diff(rows["local_ts"][lo]) >= 0).all()
    # The moved copies are exchange-only, the originals local-only.
    assert int(np.sum(ex & ~lo)) == 2 and int(np.sum(lo & ~ex)) == 2


def test_random_unordered_exchange_times_keep_both_streams_sorted() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    local = np.cumsum(rng.integers(0, 50, n)) + 10_000
    exch = local - rng.integers(0, 5000, n)
    e = np.zeros(n, dtype=EVENT_DTYPE)
    e["local_ts"] = local
    e["exch_ts"] = exch
    e["kind"] = rng.choice([KIND_DEPTH, KIND_TRADE], n)
    e["side"] = rng.choice([-1, 1], n)
    e["price"] = rng.integers(1000, 1100, n) * 0.1
    e["qty"] = rng.random(n)
    rows, st = peer_convert.to_hftbacktest(e)
    assert st.split > 0
    np.testing.assert_array_equal(peer_convert.local_stream(rows), e)
    np.testing.assert_array_equal(
        peer_convert.exchange_stream(rows), e[np.argsort(e["exch_ts"], kind="stable")]
    )


def test_split_ties_spreads_depth_and_trade_ties_but_not_a_snapshot_batch() -> None:
    e = _ev(
        [
            (100, 150, 0.0, 0.0, KIND_CLEAR, 0),
            (100, 150, 10.0, 1.0, KIND_SNAPSHOT, 1),
            (100, 150, 10.2, 2.0, KIND_SNAPSHOT, -1),
            (110, 200, 10.1, 0.5, KIND_TRADE, 1),
            (110, 200, 10.2, 1.5, KIND_DEPTH, -1),
            (110, 200, 10.3, 1.0, KIND_DEPTH, -1),
            (120, 210, 10.1, 1.0, KIND_DEPTH, 1),
            (120, 211, 10.1, 2.0, KIND_DEPTH, 1),  # 1 ns gap: no room to spread the next tie
            (120, 211, 10.1, 3.0, KIND_DEPTH, 1),
            (130, 212, 10.1, 4.0, KIND_DEPTH, 1),
        ]
    )
    rows, st = peer_convert.to_hftbacktest(e, split_ties=True)
    assert rows["local_ts"].tolist() == [150, 150, 150, 200, 201, 202, 210, 211, 211, 212]
    assert rows["exch_ts"].tolist() == e["exch_ts"].tolist()
    assert (st.ties_split, st.ties_kept, st.max_nudge_ns) == (2, 1, 2)
    back = peer_convert.local_stream(rows)
    for f in ("exch_ts", "price", "qty", "kind", "side"):
        np.testing.assert_array_equal(back[f], e[f])


def test_split_ties_leaves_a_run_whose_snapshot_follows_a_moved_event() -> None:
    e = _ev(
        [
            (100, 150, 10.1, 1.0, KIND_DEPTH, 1),
            (100, 150, 10.2, 1.0, KIND_DEPTH, -1),
            (100, 150, 10.0, 1.0, KIND_SNAPSHOT, 1),
            (200, 300, 10.0, 1.0, KIND_DEPTH, 1),
        ]
    )
    local, done, kept, _ = peer_convert.split_local_ties(e)
    assert local.tolist() == [150, 150, 150, 300]
    assert (done, kept) == (0, 1)


def test_split_ties_keeps_the_synthetic_feed_sorted(feed: np.ndarray) -> None:
    rows, st = peer_convert.to_hftbacktest(feed, split_ties=True)
    assert st.ties_split > 0
    lt = rows["local_ts"]
    assert (np.diff(lt) >= 0).all()
    kinds = feed["kind"]
    moved = lt != feed["local_ts"]
    assert not moved[(kinds == KIND_SNAPSHOT) | (kinds == KIND_CLEAR)].any()
    # Every event now has a local time of its own, except within snapshot batches.
    same = np.r_[False, lt[1:] == lt[:-1]]
    assert not same[(kinds == KIND_DEPTH) | (kinds == KIND_TRADE)].any()


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ((1, 2, 10.0, 1.0, 9, 1), "'kind' = 9"),
        ((1, 2, 10.0, 1.0, KIND_DEPTH, 0), "'side' = 0"),
        ((1, 2, 10.0, 1.0, KIND_TRADE, 2), "'side' = 2"),
    ],
)
def test_bad_events_are_named_with_their_index(row: tuple, field: str) -> None:
    e = _ev([(1, 2, 10.0, 1.0, KIND_DEPTH, 1), row])
    with pytest.raises(FeedError, match=r"event 1.*" + field.replace("'", ".")):
        peer_convert.to_hftbacktest(e)


def test_a_feed_out_of_local_order_is_refused() -> None:
    e = _ev([(1, 5, 10.0, 1.0, KIND_DEPTH, 1), (2, 4, 10.0, 1.0, KIND_DEPTH, 1)])
    with pytest.raises(FeedError, match=r"event 1: field 'local_ts' = 4 is earlier"):
        peer_convert.to_hftbacktest(e)
    with pytest.raises(TypeError, match="EVENT_DTYPE"):
        peer_convert.to_hftbacktest(np.zeros(3))


def test_deletions_first_moves_a_message_deletions_ahead_of_its_updates() -> None:
    e = _ev(
        [
            (100, 150, 10.0, 1.0, KIND_SNAPSHOT, 1),
            (100, 150, 10.1, 1.0, KIND_SNAPSHOT, -1),
            # One diff: a new bid at the old ask, then the ask's deletion (Binance order).
            (200, 250, 10.1, 2.0, KIND_DEPTH, 1),
            (200, 250, 10.0, 0.0, KIND_DEPTH, 1),
            (200, 250, 10.1, 0.0, KIND_DEPTH, -1),
            (200, 250, 10.2, 3.0, KIND_DEPTH, -1),
            (210, 250, 10.1, 0.5, KIND_TRADE, -1),
            # A message that lists one level twice is left as it is.
            (300, 350, 10.3, 1.0, KIND_DEPTH, -1),
            (300, 350, 10.3, 0.0, KIND_DEPTH, -1),
            # Same local time, another exchange time: another message (nothing to move).
            (301, 350, 10.2, 0.0, KIND_DEPTH, -1),
        ]
    )
    out, st = peer_convert.deletions_first(e)
    assert out[:2].tolist() == e[:2].tolist()
    assert out[2:6].tolist() == e[[3, 4, 2, 5]].tolist()
    assert out[6:].tolist() == e[6:].tolist()
    assert (st.runs, st.reordered, st.moved, st.kept_repeated_price) == (2, 1, 3, 1)
    assert e[2]["qty"] == 2.0  # the input is untouched


def _book_after(book: dict[int, dict[float, float]], ev: np.void) -> None:
    if ev["kind"] in (KIND_DEPTH, KIND_SNAPSHOT):
        side = book[int(ev["side"])]
        if ev["qty"] > 0:
            side[float(ev["price"])] = float(ev["qty"])
        else:
            side.pop(float(ev["price"]), None)


def _crossed(book: dict[int, dict[float, float]]) -> bool:
    return bool(book[1] and book[-1] and max(book[1]) >= min(book[-1]))


def _diff_feed(rng: np.random.Generator, n_msgs: int) -> np.ndarray:
    """A moving two-sided book as diff messages listing bids first, then asks (as Binance's
    converter does): each message leaves the book uncrossed."""
    bids = {round(100.0 - 0.1 * i, 1): 1.0 for i in range(1, 6)}
    asks = {round(100.0 + 0.1 * i, 1): 1.0 for i in range(0, 5)}
    rows = [(0, 0, p, q, KIND_SNAPSHOT, 1) for p, q in bids.items()]
    rows += [(0, 0, p, q, KIND_SNAPSHOT, -1) for p, q in asks.items()]
    mid = 100.0
    for k in range(1, n_msgs + 1):
        mid = round(mid + 0.1 * int(rng.integers(-2, 3)), 1)
        new_b = {round(mid - 0.1 * i, 1): float(rng.integers(1, 5)) for i in range(1, 6)}
        new_a = {round(mid + 0.1 * i, 1): float(rng.integers(1, 5)) for i in range(0, 5)}
        msg = []
        for side, old, new in ((1, bids, new_b), (-1, asks, new_a)):
            for p in sorted(set(old) | set(new)):
                msg.append((k * 1000, k * 1000 + 7, p, new.get(p, 0.0), KIND_DEPTH, side))
        rows += msg
        bids, asks = new_b, new_a
    return _ev(rows)


def test_deletions_first_leaves_no_book_crossed_mid_message_and_the_same_books_after() -> None:
    e = _diff_feed(np.random.default_rng(5), 300)
    out, st = peer_convert.deletions_first(e)
    assert st.reordered > 0 and st.kept_repeated_price == 0
    for feed, may_cross in ((e, True), (out, False)):
        book: dict[int, dict[float, float]] = {1: {}, -1: {}}
        crossed = 0
        ends = []
        for i, ev in enumerate(feed):
            _book_after(book, ev)
            last = i + 1 == len(feed) or feed[i + 1]["exch_ts"] != ev["exch_ts"]
            crossed += _crossed(book) and ev["kind"] == KIND_DEPTH
            if last:
                ends.append((dict(book[1]), dict(book[-1])))
        if may_cross:
            assert crossed > 0  # the capture's order does cross the book mid-message
            before = ends
        else:
            assert crossed == 0
            assert ends == before


def test_the_feeds_clock_model_is_applied_for_both_simulators() -> None:
    from mm_sim.feeds import clock

    e = _ev([(1000, 900, 10.0, 1.0, KIND_DEPTH, 1), (1100, 1050, 10.0, 2.0, KIND_TRADE, 1)])
    model = clock.estimate(e["local_ts"].astype(np.int64) - e["exch_ts"].astype(np.int64))
    assert model.shift_ns > 0  # the recorder clock ran behind
    out, info = peer.clock_corrected(e, model)
    assert info["mode"] == "auto" and info["shift_ns"] == model.shift_ns
    assert (out["local_ts"] - e["local_ts"]).tolist() == [model.shift_ns] * 2
    assert e["local_ts"].tolist() == [900, 1050]  # the input is untouched
    same, raw = peer.clock_corrected(e, None)
    assert same is e and raw["shift_ns"] == 0
    assert not hasattr(peer, "non_negative_feed_lag")  # no bench-only clock shift any more


# ------------------------------------------------------------------------------------------------
# The decision kernel shared with hftbacktest, against its plain-Python reference
# ------------------------------------------------------------------------------------------------


def _params(**ov: float) -> np.ndarray:
    base = load_profile("S1")
    prof, o, _ = peer.comparison_setup(base, Overrides().model_copy(update=ov))
    return make_params(prof, o, INST)


PARAMS = {
    "s1": _params(),
    "tight": _params(min_interval_ms=0.0, replace_rate_per_min=1.0, tail_age_ms=10.0),
    "busy": _params(min_interval_ms=1.0, base_spread_bps_delta=-1.0),
}


@pytest.mark.parametrize("name", sorted(PARAMS))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_decide_matches_its_python_reference(name: str, seed: int) -> None:
    p = PARAMS[name].copy()
    if name == "busy":
        p[peer_strategy.D.K_MAX_IN_FLIGHT] = 1
        p[peer_strategy.D.K_MAX_POS] = 0.02
    rng = np.random.default_rng(seed)
    a = peer_strategy.make_state(log_capacity=1)
    b = peer_strategy.make_state(log_capacity=1)
    now = 1_000_000_000_000
    bb = 300_000
    sent = 0
    for _ in range(3000):
        now += int(rng.choice([1_000, 3_000_000, 40_000_000, 150_000_000]))
        bb += int(rng.integers(-3, 4))
        ba = bb + int(rng.integers(1, 4))
        pos = round(float(rng.integers(-12, 13)) * 0.001, 3)
        if rng.random() < 0.05:  # an order reported filled: the strategy forgets it
            k = int(rng.integers(0, 2))
            a["sd"][k, peer_strategy.SD_OID] = -1
            b["sd"][k, peer_strategy.SD_OID] = -1
        na = peer_strategy.decide(
            now, bb, ba, pos, p, *(a[k] for k in peer_strategy.STATE_ORDER[:-1])
        )
        nb = peer_strategy.decide_reference(now, bb, ba, pos, p, b)
        assert na == nb
        np.testing.assert_array_equal(a["acts"][:na], b["acts"][:nb])
        for key in ("sd", "g", "acks", "vol_i", "li", "out"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        for key in ("gf", "vol_f", "lf"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=0, err_msg=key)
        sent += na
    out = a["out"]
    assert sent > 50
    assert out[peer_strategy.R_PLACES] > 0 and out[peer_strategy.R_REPLACES] > 0
    if name == "tight":
        assert out[peer_strategy.R_BLK_THROTTLE] > 0
    if name == "busy":
        assert out[peer_strategy.R_BLK_RISK] > 0 and out[peer_strategy.R_BLK_CONCURRENCY] > 0
    if name == "s1":
        assert out[peer_strategy.R_BLK_MIN_INTERVAL] > 0


def test_comparison_setup_lists_what_it_changes() -> None:
    prof = load_profile("S1")
    lat = prof.latency.model_copy(update={"mode": LatencyMode.feed, "cancel_ms": 2.0})
    prof = prof.model_copy(update={"latency": lat})
    p2, ov, changes = peer.comparison_setup(prof)
    assert p2.latency.mode == LatencyMode.constant
    assert p2.latency.cancel_ms == p2.latency.entry_ms
    assert ov.impact_cap_ratio == 10.0 and ov.tail_age_ms == 60000.0
    assert ov.min_interval_ms == Overrides().min_interval_ms
    assert any("latency.mode" in c for c in changes)
    assert any("cancel_ms" in c for c in changes)
    assert "overrides.impact_cap_ratio=10.0" in changes


def test_action_agreement_counts_the_identical_prefix() -> None:
    a = np.array([[1, 1, 3, 100, 10], [2, -1, 3, 105, 10], [3, 1, 3, 99, 10]])
    b = np.array([[1, 1, 3, 100, 10], [2, -1, 3, 106, 10], [3, 1, 3, 99, 10], [4, 1, 1, 9, 1]])
    r = peer.action_agreement(a, b)
    assert r["identical_prefix"] == 1
    assert r["first_divergence_ts"] == 2
    assert r["common_share"] == pytest.approx(2 / 4)


def _run(sc: str, qm: str, m: dict, h: dict, default: dict | None = None, **extra: object) -> dict:
    """A compared run: ``m`` is mm_sim with hftbacktest's rules (the scored arm), ``default``
    mm_sim with its own rules (``m`` if not given)."""

    def sim(d: dict) -> dict:
        base = {"fills": 10, "orders_filled": 10, "fill_qty": 1.0, "pnl_quote": 0.0,
                "decisions": 100}  # fmt: skip
        return {**base, **d}

    arms = {"default": sim(default if default is not None else m), "hbt_rules": sim(m),
            "hbt_rules_no_cross": sim(m)}  # fmt: skip
    return {"scenario": sc, "queue_model": qm, "mm_sim": arms["default"], "hftbacktest": sim(h),
            "mm_sim_arms": arms,
            "fill_agreement": {a: peer.fill_agreement(x, sim(h)) for a, x in arms.items()},
            "exchange_model": "PartialFillExchange", "ratio_events_per_s": 3.0,
            "decisions_diff": 0, **extra}  # fmt: skip


def test_agreement_scores_every_run_and_names_the_worst() -> None:
    a = {
        "feed": "a",
        "runs": [
            _run("S1", "probabilistic", {"fills": 10}, {"fills": 10}),
            _run("S1", "conservative", {"fills": 0}, {"fills": 0}),
        ],
    }
    b = {"feed": "b", "runs": [_run("S1", "probabilistic", {"fills": 30}, {"fills": 10},
                                    ratio_events_per_s=1.5)]}  # fmt: skip
    ag = peer.agreement([a])
    assert ag["fills"]["met"] and ag["fills"]["within_tolerance"] == 2
    ag = peer.agreement([a, b])
    assert not ag["fills"]["met"]
    assert ag["fills"]["worst_run"] == "b / S1 / probabilistic"
    assert ag["fills"]["worst_ratio"] == pytest.approx(3.0)
    assert ag["fills"]["within_tolerance"] == 2
    assert ag["events_per_s_ratio"]["min"] == 1.5
    assert ag["orders_filled"]["met"]  # only fill counts differ here
    assert ag["arms"]["hbt_rules"]["fills_and_qty_within"] == 2 and not ag["met"]
    # A run that could not be compared counts against "met everywhere".
    c = {"feed": "c", "runs": [{"scenario": "S1", "queue_model": "conservative",
                                "error": "stopped"}]}  # fmt: skip
    ag = peer.agreement([a, c])
    assert not ag["fills"]["met"] and ag["not_compared"] == ["c / S1 / conservative: stopped"]


def test_agreement_scores_hftbacktests_rules_and_reports_the_default_rules_apart() -> None:
    # mm_sim's default rules fill one order in parts (more fills, less quantity); with
    # hftbacktest's rules it agrees: the target is met, the default arm is only reported.
    runs = [
        _run("S1", "conservative", {"fills": 10, "fill_qty": 1.0}, {"fills": 10, "fill_qty": 1.0},
             default={"fills": 14, "fill_qty": 0.8}),
        _run("S1", "probabilistic", {"fills": 21, "fill_qty": 1.05}, {"fills": 20},
             default={"fills": 20, "fill_qty": 1.0}),
    ]  # fmt: skip
    ag = peer.agreement([{"feed": "a", "runs": runs}])
    assert ag["met"] and ag["within_tolerance"] == 2
    assert ag["fills"]["worst_ratio"] == pytest.approx(1.05)
    d = ag["arms"]["default"]
    assert not d["met"] and d["fills_and_qty_within"] == 1
    assert d["fills"]["worst_ratio"] == pytest.approx(1.4)
    assert d["fill_qty"]["worst_ratio"] == pytest.approx(0.8)
    fa = runs[0]["fill_agreement"]
    assert fa["hbt_rules"]["within"] and not fa["default"]["within"]
    assert not fa["default"]["fills"]["within"] and fa["default"]["orders_filled"]["within"]


def test_bench_report_shows_each_run_in_both_rule_arms() -> None:
    from benchmarks import report as bench_report

    runs = [
        _run("S1", "conservative", {"fills": 10, "fill_qty": 1.0}, {"fills": 10, "fill_qty": 1.0},
             default={"fills": 14, "fill_qty": 0.8}),
        _run("touch", "conservative", {"fills": 30}, {"fills": 20}),
    ]  # fmt: skip
    feed = {"feed": "a", "runs": runs, "ratio_events_per_s": 3.0}
    lines = bench_report._fill_table([feed])
    rows = [x for x in lines if x.startswith("| a |")]
    assert rows[0].split(" | ")[3:] == [
        "10 / 10 / 14", "10 / 10 / 10", "1.000 / 1.000 / 0.800", "1.000, 1.000", "YES",
        "1.400, 0.800", "NO", "10 |",
    ]  # fmt: skip
    assert "1.500, 1.000 | NO" in rows[1]
    targets: list[tuple] = []
    feed["agreement"] = peer.agreement([feed])
    bench_report.peer_targets(feed, lambda *a: targets.append(a))
    hbt = next(t for t in targets if "hftbacktest's fill rules" in t[0])
    assert hbt[2] == "1 of 2 runs" and hbt[3] is False
    default = next(t for t in targets if "default fill rules" in t[0])
    assert default[3] is None  # reported, not a target


def test_hbt_rules_set_what_hftbacktest_does_and_nothing_else() -> None:
    from mm_sim.config import EventOrder, ThroughFill

    prof, _, changes = peer.comparison_setup(load_profile("S1"))
    h = peer.with_rules(prof, "hbt_rules")
    assert h.matching.event_order == EventOrder.exchange
    assert h.matching.through_fill == ThroughFill.order
    assert h.matching.crossing_fills is True  # hftbacktest fills a resting order the book crosses
    assert not peer.with_rules(prof, "hbt_rules_no_cross").matching.crossing_fills
    assert peer.with_rules(prof, "default") is prof
    assert h.model_copy(update={"matching": prof.matching}) == prof  # only the fill rules moved
    # The peer loop sends GTC limit orders, so both simulators quote plain limit orders.
    assert prof.quoting.order_type == "limit"
    assert any(c.startswith("quoting.order_type=limit") for c in changes)


def test_queue_effect_flags_queue_models_that_change_nothing() -> None:
    runs = [
        _run("S1", "probabilistic", {"fills": 10}, {"fills": 12}),
        _run("S1", "conservative", {"fills": 10}, {"fills": 11}),
        _run("touch", "probabilistic", {"fills": 20}, {"fills": 30}),
        _run("touch", "conservative", {"fills": 21}, {"fills": 30},
             exchange_model="NoPartialFillExchange"),
    ]  # fmt: skip
    qe = {q["scenario"]: q for q in peer.queue_effect(runs)}
    assert qe["S1"]["mm_sim"]["identical"] is True
    assert qe["S1"]["hftbacktest"]["identical"] is False
    assert qe["touch"]["mm_sim"]["identical"] is False
    assert qe["touch"]["hftbacktest"]["identical"] is None  # exchange model differed too
    ag = peer.agreement([{"feed": "a", "runs": runs, "queue_effect": list(qe.values())}])
    assert ag["queue_model_no_effect"] == ["a / S1: mm_sim"]
    assert ag["queue_model_confounded"] and ag["queue_model_effect"] == []


def test_without_hftbacktest_the_bench_says_how_to_install_it() -> None:
    if peer.available():
        pytest.skip("hftbacktest is installed here")
    e = synthetic(5.0)
    assert peer.compare(e.events, e.instrument, load_profile("S1")) == {"peer": peer.NOT_INSTALLED}


# ------------------------------------------------------------------------------------------------
# With hftbacktest (the `peer` extra; run in .venv-peer)
# ------------------------------------------------------------------------------------------------


def test_restated_layout_matches_the_installed_hftbacktest(feed: np.ndarray) -> None:
    hbt = pytest.importorskip("hftbacktest")
    from hftbacktest.data.validation import validate_event_order

    assert peer_convert.check_against(hbt) == []
    rows, _ = peer_convert.to_hftbacktest(feed, split_ties=True)
    validate_event_order(rows)  # hftbacktest's own check: both streams in time order


def test_small_comparison_agrees_on_the_same_work() -> None:
    pytest.importorskip("hftbacktest")
    f = synthetic(120.0)
    r = peer.compare(
        f.events, f.instrument, load_profile("S1"), repeats=1, queue_models=("conservative",)
    )
    assert "error" not in r, r.get("error")
    m, h = r["mm_sim"], r["hftbacktest"]
    assert h["end_code"] == 1 and h["api_errors"] == 0 and h["deterministic"]
    assert h["exchange_model"] == "PartialFillExchange"
    assert m["events"] == h["events"] == len(f.events)
    # Same decision points (ties split) and the same strategy: the first actions are identical
    # until the first fill the two venues model differently.
    assert abs(m["decisions"] - h["decisions"]) <= 1
    assert r["runs"][0]["actions"]["identical_prefix"] >= 100
    assert m["fills"] > 5 and h["fills"] > 5
    assert 0.7 <= r["fill_ratio"] <= 1.4
    assert 0.7 <= r["runs"][0]["fill_qty_ratio"] <= 1.4
    # hftbacktest's distinct filled orders are counted by the loop: never more than its fills,
    # and here (whole-order fills through our price) every fill completes an order.
    assert 0 < h["orders_filled"] <= h["fills"]
    assert h["orders_completed"] <= h["orders_filled"]
    assert 0 < m["orders_filled"] <= m["fills"]
    assert r["ratio_events_per_s"] > 0
    per_ts = r["runs"][0]["hftbacktest_woken_per_timestamp"]
    assert per_ts["feed_wakeups"] < h["feed_wakeups"]
    ag = peer.agreement([{**r, "feed": "synthetic"}])
    assert ag["runs"] == 1 and ag["fills"]["worst_run"] == "synthetic / S1 / conservative"
    # mm_sim with hftbacktest's fill rules: the arm the 10 % target is scored on.
    run = r["runs"][0]
    assert run["rules"]["hbt_rules"] == {"event_order": "exchange", "through_fill": "order",
                                         "crossing_fills": True}  # fmt: skip
    fa = run["fill_agreement"]["hbt_rules"]
    assert 0.8 <= fa["fills"]["ratio"] <= 1.25 and 0.8 <= fa["fill_qty"]["ratio"] <= 1.25
    arms = run["mm_sim_arms"]
    assert arms["default"] == peer._arm_summary(m)
    # hftbacktest fills resting orders the book moves through: without that rule mm_sim
    # fills fewer orders than with it.
    assert arms["hbt_rules_no_cross"]["orders_filled"] < arms["hbt_rules"]["orders_filled"]


def test_real_capture_both_simulators_decide_on_the_same_books(shared_data: Path) -> None:
    """On a Binance capture (diff messages with deletions first, clock corrected by the feed's
    model), both simulators decide on the same books: the decision counts agree."""
    pytest.importorskip("hftbacktest")
    from benchmarks import data
    from mm_sim.events import open_feed
    from mm_sim.feeds import clock

    with tempfile.TemporaryDirectory() as tmp:
        rs = next(x for x in data.REAL_SETS if x.name == "binance-spot-btcusdt")
        bf = data.convert_real(rs, shared_data, Path(tmp))
        assert isinstance(bf, data.BenchFeed)
        model = clock.model_of(open_feed(Path(tmp) / f"{rs.name}.npy"))
    ev = bf.events[:60_000]
    prof, _ = data.profile_for(load_profile("S1"), bf.instrument)
    r = peer.compare(
        ev, bf.instrument, prof, repeats=1, queue_models=("conservative",), clock=model
    )
    assert "error" not in r, r.get("error")
    # (Without the reordering mm_sim skipped > 1000 of these decisions in the one-cursor core;
    # the two-clock core's strategy book skips about none: ``raw_feed_no_decision``.)
    # The Binance converter now lists each message's deletions first itself: nothing to move.
    assert r["deletions_first"]["reordered"] == 0
    m, h = r["mm_sim"], r["hftbacktest"]
    assert m["no_decision"] <= 5
    assert abs(m["decisions"] - h["decisions"]) <= 1
    # The feed's own clock model moved the recorder clock (it ran behind the exchange).
    assert r["local_ts_shift_ns"] == model.shift_ns > 1_000_000_000
    assert r["clock"]["model"]["method"] == "p1-floor"


def test_command_line_writes_json_for_a_feed_file(tmp_path: Path) -> None:
    pytest.importorskip("hftbacktest")
    from mm_sim.events import write_feed

    f = synthetic(30.0)
    path = tmp_path / "feed.npy"
    write_feed(path, f.events, f.instrument, source={"test": "peer"})
    out = tmp_path / "peer.json"
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.peer", "--feed", str(path), "--repeats", "1",
         "--scenarios", "S1", "--json", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["feed"] == "feed"
    assert res["mm_sim"]["events"] == len(f.events)
    for key in ("ratio_events_per_s", "fill_ratio", "cadence", "versions", "queue_models"):
        assert key in res
    assert res["versions"]["hftbacktest"] != "not installed"
