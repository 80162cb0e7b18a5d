"""On every real capture in ../shared/data: no fill is matched by an event the venue saw before
the order arrived (docs/CORE.md, "Two clocks").

A fill's ``queue_ns`` is its venue time minus the time the order (re)joined the queue at the
venue, so a fill from an event earlier than the arrival has ``queue_ns < 0``. The file-order
model (one cursor in receive order) is run too: on the captures whose trades arrive out of
exchange order it does produce such fills, so the check is not vacuous.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mm_sim.config import MatchingCfg, Overrides, Profile, load_profile
from mm_sim.core.engine import Engine
from mm_sim.core.records import LIQ_MAKER
from mm_sim.events import open_feed
from mm_sim.feeds.clock import model_of, shift_local
from mm_sim.feeds.convert.binance import ConvertOptions, convert

REPO = Path(__file__).resolve().parents[1]

CAPTURES = {
    "spot-btcusdt": ("hftbacktest-binance/spot", "btcusdt_2024080{}.gz", (8, 9), None),
    "spot-ethusdt": ("hftbacktest-binance/spot", "ethusdt_2024080{}.gz", (8, 9), None),
    "usdm-btcusdt": ("hftbacktest-binance/usdm", "btcusdt_2024080{}.gz", (8,), None),
}


@pytest.fixture(scope="module")
def feeds(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    base = tmp_path_factory.mktemp("real")
    for name, (folder, pattern, days, symbol) in CAPTURES.items():
        paths = [shared_data / folder / pattern.format(d) for d in days]
        dest = base / f"{name}.npy"
        convert(paths, dest, ConvertOptions(symbol=symbol))
        out[name] = dest
    cf = shared_data / "cryptofeed-binance"
    dest = base / "futures-sushiusdt.npy"
    convert(
        [cf / "BINANCE_FUTURES.ws.1.0", cf / "BINANCE_FUTURES.http.0.0"],
        dest,
        ConvertOptions(symbol="SUSHIUSDT", exchange_info=cf / "BINANCE_FUTURES.0"),
    )
    out["futures-sushiusdt"] = dest
    return out


def run(path: Path, profile: Profile) -> tuple[Engine, np.ndarray]:
    feed = open_feed(path)
    events = shift_local(np.array(feed.events), model_of(feed).shift_ns)
    inst = profile.instrument_for(feed.meta.instrument)
    if profile.quoting.order_qty < inst.lot_size:  # e.g. SUSHIUSDT: one lot is 1 coin
        qty = inst.lot_size
        profile = profile.model_copy(
            update={
                "quoting": profile.quoting.model_copy(update={"order_qty": qty}),
                "inventory": profile.inventory.model_copy(update={"max_position": 10 * qty}),
            }
        )
    eng = Engine(profile, Overrides(), inst, seed=1)
    fills = []
    for lo in range(0, len(events), 50_000):  # in slices, as the soak feeds it
        res = eng.run(events[lo : lo + 50_000], flush=lo + 50_000 >= len(events))
        fills.append(res.fills)
    return eng, np.concatenate(fills)


def profile(**matching: object) -> Profile:
    base = load_profile("S1")
    p = base.model_copy(update={"matching": base.matching.model_copy(update=matching)})
    # plain limit orders too: an order that arrives crossed then fills as taker at arrival
    return p.model_copy(update={"quoting": p.quoting.model_copy(update={"order_type": "limit"})})


@pytest.mark.parametrize("name", [*CAPTURES, "futures-sushiusdt"])
def test_no_fill_before_the_order_reached_the_venue(feeds: dict[str, Path], name: str) -> None:
    eng, fills = run(feeds[name], profile())
    assert len(fills) > 0, "the capture must exercise the matching"
    assert (fills["queue_ns"] >= 0).all(), fills[fills["queue_ns"] < 0][:5]
    assert eng.counters()["other"]["late_events_clamped"] == 0


def test_one_cursor_in_receive_order_fills_orders_before_they_arrive(
    feeds: dict[str, Path],
) -> None:
    _, fills = run(feeds["spot-btcusdt"], profile(event_order="file"))
    assert (fills["queue_ns"] < 0).sum() > 0


@pytest.mark.parametrize("name", ["spot-btcusdt", "usdm-btcusdt"])
def test_the_strategy_decides_once_per_message_on_real_data(
    feeds: dict[str, Path], name: str
) -> None:
    """A capture's depth message is many events on one receive time (12-17 on these); the
    strategy decides once it is all applied, never on the book half-way through it: one
    decision per distinct local_ts, across the run's slices. Per event it decides on every
    level, several times as often (the ``decide`` model arm reports what that changes)."""
    local = open_feed(feeds[name]).events["local_ts"]
    messages = int((np.diff(local) != 0).sum()) + 1
    base = load_profile("S1")
    eng, _ = run(feeds[name], base)
    c = eng.counters()
    assert c["decisions"] + c["other"]["no_decision"] == messages
    each = base.model_copy(update={"quoting": base.quoting.model_copy(update={"decide": "event"})})
    eng_e, _ = run(feeds[name], each)
    ce = eng_e.counters()
    assert ce["decisions"] + ce["other"]["no_decision"] > 5 * messages


def test_post_only_quotes_are_rejected_on_real_data(feeds: dict[str, Path]) -> None:
    p = load_profile("S1")
    assert p.quoting.order_type == "post_only" and p.matching == MatchingCfg()
    eng, fills = run(feeds["spot-btcusdt"], p)
    assert len(fills) > 0 and (fills["liquidity"] == LIQ_MAKER).all()
    assert eng.counters()["other"]["post_only_rejected"] > 0


def test_a_soak_on_a_real_capture_reports_every_truth_figure(
    feeds: dict[str, Path], tmp_path: Path
) -> None:
    """The soak's report on a real capture: the clock shift, post-only rejections, the per-order
    cancel_ratio, the Binance rule figures and net_bps with both error bars."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mm_sim", "soak", "--feed", str(feeds["spot-btcusdt"]),
           "--iterations", "2", "--iteration-minutes", "5", "--artifacts", str(out),
           "--model-arms", "all"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stdout.splitlines()[0].startswith("clock: shift +1276.")
    md = (out / "reports" / "SOAK_RESULTS.md").read_text()
    for needle in (
        "Clock: shift +1276.0 ms",
        "Post-only rejections:",
        "**cancel_ratio",
        "Binance Futures quantitative rules",
        "### Error bars (statistical)",
        "### Error bars (model)",
    ):
        assert needle in md, needle
    edge = json.loads((out / "reports" / "EDGE_REPORT.json").read_text())
    stat = edge["error_bars"]["statistical"]["figures"]["net_bps"]
    assert stat["lo"] <= stat["estimate"] <= stat["hi"]
    model = edge["error_bars"]["model"]
    switches = {a["switch"] for a in model["arms"]}
    assert switches == {
        "matching.crossing_fills", "matching.through_fill", "matching.event_order",
        "quoting.order_type", "quoting.decide", "clock",
    }  # fmt: skip
    nets = [a["net_bps"] for a in model["arms"] if a["net_bps"] is not None]
    assert len(nets) >= 4 and model["lo"] <= edge["totals"]["net_bps"] <= model["hi"]
    assert model["lo"] == min([*nets, edge["totals"]["net_bps"]])
