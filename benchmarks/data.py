"""Feeds the benchmark runs on: the embedded synthetic market and the real captures, if present.

Real data stays where it is (``../shared/data``, licensed, read-only); conversions go to a
temporary directory that is removed when the bench ends, and the conversion is timed on its own
so parsing cost never leaks into the core's throughput.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.config import Profile
from mm_sim.events import Instrument, open_feed
from mm_sim.feeds.convert.base import ConvertOptions
from mm_sim.feeds.synthetic import SyntheticParams, generate

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@dataclass
class RealSet:
    """One conversion, as in docs/FEEDS_BINANCE.md (paths relative to the data root)."""

    name: str
    inputs: list[str]
    symbol: str | None = None
    exchange_info: str | None = None


REAL_SETS = [
    RealSet(
        "binance-spot-btcusdt",
        [
            "hftbacktest-binance/spot/btcusdt_20240808.gz",
            "hftbacktest-binance/spot/btcusdt_20240809.gz",
        ],
    ),
    RealSet(
        "binance-spot-ethusdt",
        [
            "hftbacktest-binance/spot/ethusdt_20240808.gz",
            "hftbacktest-binance/spot/ethusdt_20240809.gz",
        ],
    ),
    RealSet("binance-usdm-btcusdt", ["hftbacktest-binance/usdm/btcusdt_20240808.gz"]),
    RealSet(
        "cryptofeed-usdm-sushiusdt",
        [
            "cryptofeed-binance/BINANCE_FUTURES.ws.1.0",
            "cryptofeed-binance/BINANCE_FUTURES.http.0.0",
        ],
        symbol="SUSHIUSDT",
        exchange_info="cryptofeed-binance/BINANCE_FUTURES.0",
    ),
    RealSet(
        "cryptofeed-spot-nknusdt",
        ["cryptofeed-binance/BINANCE.ws.1.0", "cryptofeed-binance/BINANCE.http.0.0"],
        symbol="NKNUSDT",
        exchange_info="cryptofeed-binance/BINANCE.0",
    ),
]


@dataclass
class BenchFeed:
    name: str
    events: np.ndarray
    instrument: Instrument
    info: dict[str, Any] = field(default_factory=dict)


def synthetic(duration_s: float, seed: int = 1, **params: Any) -> BenchFeed:
    """The embedded synthetic market (defaults of ``SyntheticParams``), generation timed."""
    t0 = time.perf_counter()
    sp = SyntheticParams(**params)
    events, inst = generate(sp, seed, duration_s)
    return BenchFeed(
        "synthetic",
        events,
        inst,
        {"duration_s": duration_s, "seed": seed, "params": params, "events": len(events),
         "generate_s": time.perf_counter() - t0},
    )  # fmt: skip


def convert_real(rs: RealSet, root: Path, workdir: Path) -> BenchFeed | dict[str, Any]:
    """Convert one real set (timed); a failure is reported, not raised (the bench goes on)."""
    from mm_sim.feeds.convert import binance

    inputs = [root / x for x in rs.inputs]
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        return {"name": rs.name, "skipped": f"missing {missing}"}
    out = workdir / f"{rs.name}.npy"
    opts = ConvertOptions(
        symbol=rs.symbol,
        exchange_info=root / rs.exchange_info if rs.exchange_info else None,
        strict=False,
        tick_size=None,
        lot_size=None,
    )
    t0 = time.perf_counter()
    try:
        res = binance.convert(inputs, out, opts)
    except Exception as exc:  # a converter bug must not sink the rest of the bench
        return {"name": rs.name, "error": f"conversion failed: {exc!r}"}
    conv_s = time.perf_counter() - t0
    feed = open_feed(out)
    events = np.array(feed.events)  # resident copy: throughput without page faults
    in_bytes = sum(p.stat().st_size for p in inputs)
    return BenchFeed(
        rs.name,
        events,
        feed.instrument,
        {"inputs": rs.inputs, "symbol": feed.instrument.symbol, "events": len(events),
         "convert_s": conv_s, "input_bytes": in_bytes,
         "convert_events_per_s": len(events) / conv_s if conv_s > 0 else math.nan,
         "bad_lines": res.bad_lines.total},
    )  # fmt: skip


def real_feeds(workdir: Path, root: Path = SHARED_DATA) -> tuple[list[BenchFeed], list[dict]]:
    """Every real set that converts; the others as skip/error records."""
    if not root.is_dir():
        return [], [{"name": "shared-data", "skipped": f"{root} not present"}]
    feeds: list[BenchFeed] = []
    notes: list[dict] = []
    for rs in REAL_SETS:
        r = convert_real(rs, root, workdir)
        if isinstance(r, BenchFeed):
            if len(r.events) == 0:
                notes.append({"name": rs.name, "skipped": "conversion produced no events"})
            else:
                feeds.append(r)
        else:
            notes.append(r)
    return feeds, notes


def profile_for(profile: Profile, inst: Instrument) -> tuple[Profile, list[str]]:
    """S1 quotes 0.01 BTC; on an instrument whose lot is larger, quote one lot instead."""
    lot = profile.instrument.lot_size or inst.lot_size
    if profile.quoting.order_qty >= lot:
        return profile, []
    q = profile.quoting.model_copy(update={"order_qty": lot})
    inv = profile.inventory.model_copy(
        update={"max_position": max(profile.inventory.max_position, 10 * lot)}
    )
    changed = [f"quoting.order_qty={lot}", f"inventory.max_position={inv.max_position}"]
    return profile.model_copy(update={"quoting": q, "inventory": inv}), changed


def repeat_shifted(events: np.ndarray, times: int) -> np.ndarray:
    """``times`` copies back to back, each shifted to start after the previous one ends."""
    if times <= 1:
        return events
    span = int(events["local_ts"][-1] - events["local_ts"][0]) + 1_000_000_000
    out = np.concatenate([events] * times)
    n = len(events)
    for k in range(1, times):
        out["exch_ts"][k * n : (k + 1) * n] += k * span
        out["local_ts"][k * n : (k + 1) * n] += k * span
    return out
