"""Two clocks, order types and fill rules on hand-built event scripts (docs/CORE.md).

Each scenario runs in the exchange-order model (the default) and in the file-order model
(``matching.event_order = file``, one cursor in receive order), where the scenario shows the
defect the two clocks fix. The reference engine is checked against the kernel every time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_core_match import overrides

from mm_sim.config import Overrides, Profile
from mm_sim.core.engine import Engine
from mm_sim.core.records import ACT_CANCEL, ACT_PLACE, LIQ_MAKER
from mm_sim.core.reference import RefEngine
from mm_sim.core.script import Script
from mm_sim.events import Instrument

TICK = 0.01
INST = Instrument("TEST", "sim", TICK, 0.001)


def profile(
    event_order: str = "exchange", order_type: str = "post_only", **matching: Any
) -> Profile:
    return Profile(
        quoting={
            "order_qty": 0.005,
            "base_half_spread_bps": 1.0,
            "gamma": 0.0,
            "impact_levels": 3,
            "order_type": order_type,
        },
        inventory={"max_position": 1.0, "max_notional": 1e9},
        fees={"maker_bps": -0.5, "taker_bps": 4.0},
        latency={"entry_ms": 2.0, "cancel_ms": 2.0, "ack_ms": 1.0},
        queue={"model": "conservative"},
        matching={"event_order": event_order, **matching},
        limiter={"max_in_flight": 4, "venue_budget": 1000, "venue_window_ms": 1000.0},
        mark_interval_ms=1000.0,
    )


def received_in_order(sc: Script) -> np.ndarray:
    """The script's events as a recorder stores them: in receive (local) order."""
    ev = sc.events()
    return ev[np.argsort(ev["local_ts"], kind="stable")]


def run(prof: Profile, ovr: Overrides, ev: np.ndarray) -> tuple[Engine, Any]:
    eng = Engine(prof, ovr, INST, seed=0, n_ticks=4096)
    res = eng.run(ev)
    ref = RefEngine(prof, ovr, INST).run(ev)
    for name in ("fills", "actions", "blocks", "marks"):
        a, b = getattr(res, name), getattr(ref, name)
        assert len(a) == len(b), name
        for f in a.dtype.names or ():
            np.testing.assert_allclose(a[f].astype(float), b[f].astype(float), atol=1e-12)
    return eng, res


def ms(x: float) -> int:
    return 1_000_000_000_000 + round(x * 1e6)


# --- a print that happened before our order reached the venue --------------------------------


def print_before_arrival(order: str) -> tuple[Engine, Any]:
    # Quotes are sent at 0 ms and reach the venue at 2 ms. A seller prints through our bid at
    # 1 ms (exchange time) but the recorder receives it at 5 ms, after a depth update that
    # happened at 3 ms.
    sc = Script(TICK).at(0.0).snapshot({9999: 0.01}, {10001: 0.01})
    sc.at(3.0).depth(-1, 10005, 0.01)
    sc.at(1.0, lag_ms=4.0).trade(-1, 9998, 0.004)
    return run(profile(order), overrides(), received_in_order(sc))


def test_a_print_before_our_arrival_never_fills_us() -> None:
    eng, res = print_before_arrival("exchange")
    assert len(res.actions) == 2 and (res.actions["action"] == ACT_PLACE).all()
    assert len(res.fills) == 0 and eng.position == 0.0


def test_one_cursor_in_receive_order_let_that_print_fill_us() -> None:
    _, res = print_before_arrival("file")
    (fill,) = res.fills
    assert fill["ts"] == ms(1.0) and fill["queue_ns"] < 0  # filled before it was in the book


# --- a cancel protects an order only from its arrival on --------------------------------------


def cancel_race(order: str, print_at_ms: float) -> tuple[Engine, Any]:
    # One level per side and an impact cap of 0.1: we quote one lot. At 10 ms the bid level
    # shrinks so our size rounds to 0 lots and the strategy cancels: the cancel arrives at
    # 12 ms. A print through our bid, received late at 14 ms (after a depth update at 13 ms
    # that is received at once), happened at ``print_at_ms``.
    sc = Script(TICK).at(0.0).snapshot({9999: 0.01}, {10001: 0.01})
    sc.at(3.0).depth(-1, 10005, 0.01)
    sc.at(10.0).depth(1, 9999, 0.005)
    sc.at(13.0).depth(-1, 10006, 0.01)
    sc.at(print_at_ms, lag_ms=14.0 - print_at_ms).trade(-1, 9998, 0.004)
    return run(profile(order), overrides(impact_cap_ratio=0.1), received_in_order(sc))


def test_a_print_before_the_cancel_arrives_wins_the_race_even_when_received_late() -> None:
    eng, res = cancel_race("exchange", print_at_ms=11.5)
    assert res.actions["action"].tolist().count(ACT_CANCEL) == 1
    (fill,) = res.fills
    assert fill["ts"] == ms(11.5) and fill["qty"] == pytest.approx(0.001)
    other = eng.counters()["other"]
    assert (other["cancels_lost_race"], other["cancels_done"]) == (1, 0)


def test_a_print_after_the_cancel_arrives_does_not_fill() -> None:
    eng, res = cancel_race("exchange", print_at_ms=12.5)
    assert len(res.fills) == 0
    other = eng.counters()["other"]
    assert (other["cancels_lost_race"], other["cancels_done"]) == (0, 1)


def test_one_cursor_in_receive_order_let_the_cancel_win_a_race_it_lost() -> None:
    eng, res = cancel_race("file", print_at_ms=11.5)
    assert len(res.fills) == 0
    assert eng.counters()["other"]["cancels_done"] == 1


# --- a trade received after the depth update that already removed its liquidity -------------


def depletion_counted_once(order: str) -> tuple[Engine, Any]:
    # We join the bid at 9999 behind 0.005 visible. At 5 ms 0.004 trades at 9999 (received at
    # 8 ms); the depth update at 6 ms (received at once) shows the level at 0.001, the trade
    # already taken out. 0.001 is still ahead of us: nothing may fill.
    sc = Script(TICK).at(0.0).snapshot({9999: 0.005, 9998: 0.01}, {10001: 0.01})
    sc.at(3.0).depth(-1, 10005, 0.01)
    sc.at(6.0).depth(1, 9999, 0.001)
    sc.at(5.0, lag_ms=3.0).trade(-1, 9999, 0.004)
    sc.at(20.0, lag_ms=0.0).depth(-1, 10006, 0.01)
    return run(profile(order), overrides(), received_in_order(sc))


def test_a_late_trade_does_not_count_its_depletion_twice() -> None:
    _, res = depletion_counted_once("exchange")
    assert len(res.fills) == 0


def test_one_cursor_in_receive_order_counted_it_twice_and_filled_us() -> None:
    _, res = depletion_counted_once("file")
    assert len(res.fills) == 1 and res.fills["qty"][0] == pytest.approx(0.003)


# --- late events beyond the reorder window ---------------------------------------------------


def test_an_event_later_than_the_window_is_matched_at_receipt_minus_the_window() -> None:
    sc = Script(TICK).at(0.0).snapshot({9999: 0.01}, {10001: 0.01})
    sc.at(3.0).depth(-1, 10005, 0.01)
    sc.at(2.5, lag_ms=10.0).trade(-1, 9998, 0.004)  # happened after our arrival, 10 ms late
    ev = received_in_order(sc)
    eng, res = run(profile(reorder_window_ms=4.0), overrides(), ev)
    (fill,) = res.fills
    assert fill["ts"] == ms(12.5 - 4.0)  # matched at receipt - window, not at 2.5 ms
    assert eng.counters()["other"]["late_events_clamped"] == 1


def test_slices_and_a_checkpoint_between_them_change_nothing(tmp_path: Path) -> None:
    """The engine holds back what a later event could precede: slicing is invisible."""
    ev, prof = received_in_order(_busy_script()), profile()
    whole = Engine(prof, overrides(), INST, seed=0, n_ticks=4096)
    want = whole.run(ev)
    a = Engine(prof, overrides(), INST, seed=0, n_ticks=4096)
    first = a.run(ev[:7], flush=False)
    np.savez(tmp_path / "ck.npz", **a.state_arrays())
    b = Engine(prof, overrides(), INST, seed=0, n_ticks=4096)
    b.load_state(dict(np.load(tmp_path / "ck.npz")))
    rest = b.run(ev[7:])
    for name in ("fills", "actions", "marks"):
        got = np.concatenate([getattr(first, name), getattr(rest, name)])
        assert got.tobytes() == getattr(want, name).tobytes(), name
    assert len(want.fills) > 0


def _busy_script() -> Script:
    sc = Script(TICK).at(0.0).snapshot({9999: 0.01}, {10001: 0.01})
    for k in range(12):
        sc.at(3.0 + 2 * k, lag_ms=(k % 4) * 1.5).depth(-1, 10003 + k % 3, 0.01)
        sc.at(3.5 + 2 * k, lag_ms=(3 - k % 4) * 1.5).trade(-1, 9998 + k % 2, 0.002)
    return sc


# --- order types -----------------------------------------------------------------------------


def arriving_crossed(order_type: str) -> tuple[Engine, Any]:
    # Quotes sent at 0 ms arrive at 2 ms; at 1 ms the ask side moved down to 9999, through the
    # bid we sent at 9999 (we then pull our bid back, one tick behind the new ask).
    sc = Script(TICK).at(0.0).snapshot({9999: 0.01, 9998: 0.01}, {10001: 0.01})
    sc.at(1.0).depth(-1, 9999, 0.003)
    sc.at(5.0).depth(-1, 10006, 0.01)
    return run(profile(order_type=order_type), overrides(min_interval_ms=100.0), sc.events())


def test_a_post_only_quote_that_would_cross_on_arrival_is_rejected() -> None:
    eng, res = arriving_crossed("post_only")
    assert len(res.fills) == 0
    assert eng.counters()["other"]["post_only_rejected"] == 1
    # the strategy learned of it with the ack: it is free to quote that side again
    assert eng.orders() == [o for o in eng.orders() if o["side"] == -1]


def test_a_plain_limit_quote_takes_what_it_crosses() -> None:
    eng, res = arriving_crossed("limit")
    (fill,) = res.fills
    assert fill["liquidity"] != LIQ_MAKER and fill["qty"] == pytest.approx(0.003)
    assert eng.counters()["other"]["post_only_rejected"] == 0


# --- fill rules ------------------------------------------------------------------------------


def book_moves_through(**matching: Any) -> tuple[Engine, Any]:
    # Our bid rests at 9999 from 2 ms; at 5 ms the ask drops to 9999 without a print.
    sc = Script(TICK).at(0.0).snapshot({9999: 0.01}, {10001: 0.01})
    sc.at(3.0).depth(-1, 10005, 0.01)
    sc.at(5.0).depth(-1, 9999, 0.002)
    return run(profile(**matching), overrides(min_interval_ms=100.0), sc.events())


def test_crossing_fills_are_a_switch() -> None:
    _, on = book_moves_through()
    _, off = book_moves_through(crossing_fills=False)
    assert len(on.fills) == 1 and on.fills["qty"][0] == pytest.approx(0.002)
    assert len(off.fills) == 0


def test_through_print_rule_fills_the_print_or_the_whole_order() -> None:
    sc = Script(TICK).at(0.0).snapshot({9999: 0.01}, {10001: 0.01})
    sc.at(3.0).depth(-1, 10005, 0.01)
    sc.at(5.0).trade(-1, 9998, 0.001)
    _, printed = run(profile(), overrides(), sc.events())
    _, whole = run(profile(through_fill="order"), overrides(), sc.events())
    assert printed.fills["qty"].sum() == pytest.approx(0.001)
    assert whole.fills["qty"].sum() == pytest.approx(0.005)
