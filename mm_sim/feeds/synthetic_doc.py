"""What docs/SYNTHETIC.md is produced from: the parameter table (built from the model itself)
and a generated feed's measured statistics, printed by ``python -m mm_sim.feeds.synthetic_doc``.

Apart from the generator (synthetic.py) because the disk cache keys on the generator's source
text (synthetic_cache.py): an edit to how the docs are written must not make every cached day
stale.
"""

from __future__ import annotations

import math
from typing import Any, get_args

import numpy as np

from mm_sim.events import Instrument
from mm_sim.feeds import synthetic_kernel as K
from mm_sim.feeds.synthetic import (
    REGIME_NAMES,
    SECONDS_PER_YEAR,
    SyntheticParams,
    SyntheticRun,
    simulate,
)

UNITS = {
    "initial_price": "quote",
    "tick_size": "quote",
    "lot_size": "base",
    "contract_size": "quote per contract",
    "start_unix_s": "s (Unix)",
    "warmup_s": "s",
    "regime_vol": "1/sqrt(year)",
    "regime_mean_duration_s": "s",
    "regime_activity": "x",
    "fair_update_hz": "1/s",
    "limit_rate_hz": "1/s per side",
    "limit_distance_exponent": "-",
    "limit_max_distance_ticks": "ticks",
    "limit_size_mean": "base",
    "limit_size_tail": "-",
    "cancel_rate_hz": "1/s per order",
    "fade_rate_hz": "1/s",
    "fade_margin_ticks": "ticks",
    "market_rate_hz": "1/s",
    "informed_rate_hz": "1/s",
    "informed_edge_ticks": "ticks",
    "market_size_mean": "base",
    "market_size_tail": "-",
    "max_order_size": "base",
    "market_protect_ticks": "ticks",
    "latency_median_ms": "ms",
    "latency_log_sigma": "-",
    "latency_corr_s": "s",
    "latency_spikes_per_hour": "1/h",
    "latency_spike_mean_ms": "ms",
    "latency_spike_decay_s": "s",
}


def _range_text(metadata: list[Any]) -> str:
    lo = hi = ""
    for m in metadata:
        for op in ("gt", "ge", "lt", "le"):
            value = getattr(m, op, None)
            if value is None:
                continue
            text = f"{value:g}" if isinstance(value, float) else str(value)
            if op in ("gt", "ge"):
                lo = ("> " if op == "gt" else ">= ") + text
            elif op in ("lt", "le"):
                hi = ("< " if op == "lt" else "<= ") + text
    return ", ".join(x for x in (lo, hi) if x)


def param_table() -> str:
    """The Markdown parameter table of docs/SYNTHETIC.md, built from the model itself."""
    rows = ["| name | meaning | unit | default | range |", "| --- | --- | --- | --- | --- |"]
    for name, f in SyntheticParams.model_fields.items():
        meta = list(f.metadata)
        default = f.default
        if isinstance(default, tuple):
            inner = get_args(get_args(f.annotation)[0])[1]
            meta = list(inner.metadata)
            shown = "(" + ", ".join(f"{v:g}" for v in default) + ")"
            rng = "each " + _range_text(meta)
        else:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            rng = _range_text(meta)
        rows.append(f"| `{name}` | {f.description} | {UNITS[name]} | {shown} | {rng} |")
    return "\n".join(rows)


# ---- statistics of a generated feed (docs/SYNTHETIC.md is produced from these) ---------------


def touch_grid(
    events: np.ndarray, instrument: Instrument, t0_ns: int, step_ns: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Best bid, best ask and their quantities on a time grid, plus crossed-event count."""
    from mm_sim.core.book import make_book

    book = make_book(instrument.tick_size)
    bid, ask, bq, aq = (np.zeros(n) for _ in range(4))
    bad = K.touch_samples(
        events, book.bid, book.ask, book.st, book.tick_size, t0_ns, step_ns, bid, ask, bq, aq
    )
    return bid, ask, bq, aq, int(bad)


def feed_statistics(
    run: SyntheticRun, params: SyntheticParams, duration_s: float
) -> dict[str, Any]:
    """Measured properties of a run: what the docs report and the tests bound."""
    from mm_sim.core.book import book_apply_events, make_book, top_levels
    from mm_sim.events import KIND_NAMES, KIND_TRADE

    ev = run.events
    tick = params.tick_size
    t0 = params.start_unix_s * 1_000_000_000
    step = 100_000_000
    n = int(duration_s * 10)
    bid, ask, bq, aq, crossed = touch_grid(ev, run.instrument, t0, step, n)
    spread = np.rint((ask - bid) / tick)
    mid = 0.5 * (bid + ask)
    # realised volatility of the mid from 1-s log returns, split by the regime at the start
    m1 = mid[::10]
    r1 = np.diff(np.log(m1))
    sec = np.arange(len(r1), dtype=np.float64)
    reg = run.regime[np.searchsorted(run.regime_t, sec, side="right") - 1]
    per_regime = {}
    for r, name in enumerate(REGIME_NAMES):
        sel = reg == r
        per_regime[name] = {
            "seconds": int(sel.sum()),
            "configured_vol": params.regime_vol[r],
            "realised_vol": float(r1[sel].std() * math.sqrt(SECONDS_PER_YEAR))
            if sel.sum() > 30
            else None,
        }
    # mid minus fair (fair as of each grid time)
    fi = np.searchsorted(run.fair_t, np.arange(n) * 0.1, side="right") - 1
    fair = np.where(fi >= 0, run.fair_px[np.maximum(fi, 0)], params.initial_price)
    track = (mid - fair) / tick
    # markouts: mid change over the next second after each trade, from the pre-trade mid
    trades = ev[ev["kind"] == KIND_TRADE]
    k = (trades["exch_ts"] - t0 - 1) // step
    ok = (k >= 0) & (k + 10 < n)
    markout = {}
    for side, name in ((1, "buy"), (-1, "sell")):
        sel = ok & (trades["side"] == side)
        d = (mid[k[sel] + 10] - mid[k[sel]]) / tick
        markout[name] = {
            "trades": int(sel.sum()),
            "mean_ticks": float(d.mean()),
            "stderr_ticks": float(d.std() / math.sqrt(max(1, len(d)))),
        }
    # visible depth every 10 s: levels within 200 ticks of the touch, farthest level
    book = make_book(tick)
    px = np.zeros(4096)
    qty = np.zeros(4096)
    times = t0 + np.arange(10, int(duration_s), 10, dtype=np.int64) * 1_000_000_000
    cuts = np.searchsorted(ev["exch_ts"], times, side="right")
    prev = 0
    within: list[int] = []
    farthest: list[float] = []
    qty_75: list[float] = []
    for c in cuts:
        book_apply_events(book.bid, book.ask, book.st, book.tick_size, ev[prev:c])
        prev = int(c)
        for side in (1, -1):
            m = top_levels(book.bid, book.ask, book.st, book.tick_size, side, 4096, px, qty)
            dist = np.abs(px[:m] - px[0]) / tick
            within.append(int((dist <= 200.5).sum()))
            farthest.append(float(dist.max()))
            qty_75.append(float(qty[:m][dist <= 75.5].sum()))
    lat_ms = (ev["local_ts"] - ev["exch_ts"]) / 1e6
    counts = {name: int((ev["kind"] == kind).sum()) for kind, name in KIND_NAMES.items()}
    uniq, cnt = np.unique(spread[np.isfinite(spread)], return_counts=True)
    spread_dist = {int(u): float(c / cnt.sum()) for u, c in zip(uniq, cnt, strict=True)}
    return {
        "events": len(ev),
        "events_per_s": len(ev) / duration_s,
        "by_kind": counts,
        "crossed_events": crossed,
        "spread_ticks": spread_dist,
        "spread_mean_ticks": float(np.nanmean(spread)),
        "touch_qty_pct": dict(
            zip(
                ("p10", "p50", "p90"),
                map(float, np.percentile(np.concatenate([bq, aq]), [10, 50, 90])),
                strict=True,
            )
        ),
        "regimes": per_regime,
        "realised_vol_all": float(r1.std() * math.sqrt(SECONDS_PER_YEAR)),
        "mid_minus_fair_ticks": dict(
            zip(("p5", "p50", "p95"), map(float, np.percentile(track, [5, 50, 95])), strict=True)
        ),
        "trades": len(trades),
        "traded_base": float(trades["qty"].sum()),
        "trade_qty_pct": dict(
            zip(
                ("p50", "p90", "p99"),
                map(float, np.percentile(trades["qty"], [50, 90, 99])),
                strict=True,
            )
        ),
        "markout_1s": markout,
        "levels_within_200_ticks_median": float(np.median(within)),
        "farthest_level_ticks_median": float(np.median(farthest)),
        "qty_within_75_ticks_median": float(np.median(qty_75)),
        "latency_ms_pct": dict(
            zip(
                ("p1", "p50", "p99", "p99.9", "max"),
                map(float, np.percentile(lat_ms, [1, 50, 99, 99.9, 100])),
                strict=True,
            )
        ),
        "counters": run.counters,
    }


def _markdown(
    stats: dict[str, Any], gen_s: float, cpu_s: float, feed: str, seed: int, duration_s: float
) -> str:
    """The statistics section of docs/SYNTHETIC.md, exactly as measured."""
    lines = [
        f"Feed `{feed}`, seed {seed}, {duration_s:,.0f} simulated seconds.",
        "",
        f"- events: {stats['events']:,} ({stats['events_per_s']:,.0f} per simulated second); "
        f"generated in {gen_s:.2f} s wall / {cpu_s:.2f} s CPU (time.perf_counter / "
        "time.process_time around `simulate`, kernels already compiled, one thread)",
        "- by kind: " + ", ".join(f"{k} {v:,}" for k, v in stats["by_kind"].items()),
        f"- events that left the replayed book crossed or locked: {stats['crossed_events']}",
        f"- trades: {stats['trades']:,}, traded {stats['traded_base']:,.1f} base units; "
        "trade size p50/p90/p99: "
        + " / ".join(f"{v:.3f}" for v in stats["trade_qty_pct"].values()),
        "- generator counters: " + ", ".join(f"{k} {v:,}" for k, v in stats["counters"].items()),
        "",
        "Touch spread (sampled every 100 ms):",
        "",
        "| spread, ticks | share of time |",
        "| ---: | ---: |",
    ]
    dist = stats["spread_ticks"]
    for s in sorted(dist):
        if s <= 8:
            lines.append(f"| {s} | {dist[s]:.1%} |")
    rest = sum(v for s, v in dist.items() if s > 8)
    lines += [
        f"| > 8 | {rest:.1%} |",
        "",
        f"Mean spread {stats['spread_mean_ticks']:.2f} ticks. Touch quantity (both sides, 100 ms "
        "samples) p10/p50/p90: "
        + " / ".join(f"{v:.3f}" for v in stats["touch_qty_pct"].values())
        + " base units.",
        "",
        "Realised volatility of the mid (1-s log returns, annualised) per regime:",
        "",
        "| regime | seconds | configured | realised |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in stats["regimes"].items():
        rv = "n/a" if r["realised_vol"] is None else f"{r['realised_vol']:.3f}"
        lines.append(f"| {name} | {r['seconds']:,} | {r['configured_vol']:.2f} | {rv} |")
    m = stats["markout_1s"]
    lines += [
        f"| all | | | {stats['realised_vol_all']:.3f} |",
        "",
        "- mid minus fair, ticks (p5/p50/p95): "
        + " / ".join(f"{v:.2f}" for v in stats["mid_minus_fair_ticks"].values()),
        f"- mid change over the next 1 s after a buyer-initiated trade: "
        f"{m['buy']['mean_ticks']:+.2f} ticks (s.e. {m['buy']['stderr_ticks']:.2f}, "
        f"{m['buy']['trades']:,} trades); after a seller-initiated trade: "
        f"{m['sell']['mean_ticks']:+.2f} ticks (s.e. {m['sell']['stderr_ticks']:.2f}, "
        f"{m['sell']['trades']:,} trades)",
        f"- visible depth (every 10 s, per side, medians): "
        f"{stats['levels_within_200_ticks_median']:.0f} non-empty levels within 200 ticks of "
        f"the touch, farthest level {stats['farthest_level_ticks_median']:.0f} ticks away, "
        f"{stats['qty_within_75_ticks_median']:.1f} base units within 75 ticks (2.5 bp)",
        "- feed latency local_ts - exch_ts, ms (p1/p50/p99/p99.9/max): "
        + " / ".join(f"{v:.1f}" for v in stats["latency_ms_pct"].values()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the measured statistics of a synthetic feed as Markdown (for docs/SYNTHETIC.md)."""
    import argparse
    import time

    from mm_sim.feeds.spec import SyntheticFeedSpec, resolve_feed

    ap = argparse.ArgumentParser(
        prog="python -m mm_sim.feeds.synthetic_doc", description=main.__doc__
    )
    ap.add_argument("--feed", default="synthetic", help="feed name or definition path")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--params-table", action="store_true", help="print the parameter table only")
    args = ap.parse_args(argv)
    if args.params_table:
        print(param_table())
        return 0
    spec = resolve_feed(args.feed)
    if not isinstance(spec, SyntheticFeedSpec):
        raise SystemExit(f"{args.feed} is not a synthetic feed")
    params = SyntheticParams(**spec.params)
    simulate(params, args.seed, 1.0)  # load (or compile) the kernels outside the timing
    t = time.perf_counter()
    c = time.process_time()
    run = simulate(params, args.seed, spec.duration_s)
    gen_s = time.perf_counter() - t
    cpu_s = time.process_time() - c
    stats = feed_statistics(run, params, spec.duration_s)
    print(_markdown(stats, gen_s, cpu_s, spec.name, args.seed, spec.duration_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
