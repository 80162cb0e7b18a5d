"""The numba book kernel against the reference book on real Binance recordings, at every event.

Each data set is converted with the Binance converter (``mm_sim.feeds.convert.binance``), then
replayed through both books. After every event the best bid/ask and the top 5 levels of each
side must be identical. Deep levels may differ only where the kernel's window dropped updates
far from the touch: at the end, every level the kernel holds must be in the reference with the
same quantity, and the levels it lacks are no more than its drop counter accounts for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numba import njit

import mm_sim.feeds.convert.binance as binance
from mm_sim import kernel_cache
from mm_sim.core.book import (
    ST_BASE,
    ST_DROPPED,
    book_apply,
    make_book,
    top_levels,
)
from mm_sim.core.reference_book import ReferenceBook
from mm_sim.events import ASK, BID, open_feed
from mm_sim.feeds.convert.base import ConvertOptions

pytestmark = pytest.mark.shared_data

TOP = 5
CHUNK = 1 << 15

DATASETS = {
    "spot-btcusdt-chained": (
        [
            "hftbacktest-binance/spot/btcusdt_20240808.gz",
            "hftbacktest-binance/spot/btcusdt_20240809.gz",
        ],
        {},
    ),
    "spot-ethusdt-pair": (
        [
            "hftbacktest-binance/spot/ethusdt_20240808.gz",
            "hftbacktest-binance/spot/ethusdt_20240809.gz",
        ],
        {},
    ),
    "usdm-btcusdt": (["hftbacktest-binance/usdm/btcusdt_20240808.gz"], {}),
    "cryptofeed-sushiusdt-futures": (
        [
            "cryptofeed-binance/BINANCE_FUTURES.ws.1.0",
            "cryptofeed-binance/BINANCE_FUTURES.http.0.0",
        ],
        {"symbol": "SUSHIUSDT", "exchange_info": "cryptofeed-binance/BINANCE_FUTURES.0"},
    ),
}


@njit(cache=True)
def kernel_trace(events, bid, ask, st, tick, counts, px, qty):  # type: ignore[no-untyped-def]
    """Apply each event and record the top levels after it (rows: event; bid then ask)."""
    tmp_p = np.zeros(TOP)
    tmp_q = np.zeros(TOP)
    for k in range(events.shape[0]):
        e = events[k]
        book_apply(bid, ask, st, tick, e.kind, e.side, e.price, e.qty)
        for s in range(2):
            side = 1 if s == 0 else -1
            tmp_p[:] = 0.0
            tmp_q[:] = 0.0
            counts[k, s] = top_levels(bid, ask, st, tick, side, TOP, tmp_p, tmp_q)
            px[k, s, :] = tmp_p
            qty[k, s, :] = tmp_q


def reference_trace(ref: ReferenceBook, events: np.ndarray) -> tuple[np.ndarray, ...]:
    """The same trace from the reference book (ticks and quantities, best first, 0-padded)."""
    n = len(events)
    kinds = events["kind"].tolist()
    sides = events["side"].tolist()
    prices = events["price"].tolist()
    qtys = events["qty"].tolist()
    bids, asks = ref.bids, ref.asks
    counts: list[int] = []
    ticks: list[int] = []
    sizes: list[float] = []
    pad_t = [0] * TOP
    pad_q = [0.0] * TOP
    for i in range(n):
        ref.apply(kinds[i], sides[i], prices[i], qtys[i])
        bk = list(reversed(bids.keys()[-TOP:]))
        ak = list(asks.keys()[:TOP])
        counts += (len(bk), len(ak))
        ticks += bk + pad_t[len(bk) :] + ak + pad_t[len(ak) :]
        sizes += [bids[t] for t in bk] + pad_q[len(bk) :] + [asks[t] for t in ak] + pad_q[len(ak) :]
    return (
        np.asarray(counts, np.int64).reshape(n, 2),
        np.asarray(ticks, np.int64).reshape(n, 2, TOP),
        np.asarray(sizes, np.float64).reshape(n, 2, TOP),
    )


def side_pairs(px: np.ndarray, qty: np.ndarray) -> str:
    bids = [(float(p), float(q)) for p, q in zip(px[0], qty[0], strict=True)]
    asks = [(float(p), float(q)) for p, q in zip(px[1], qty[1], strict=True)]
    return f"bids {bids} asks {asks}"


@pytest.fixture(scope="module", params=sorted(DATASETS))
def converted(
    request: pytest.FixtureRequest, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    files, extra = DATASETS[request.param]
    inputs = [shared_data / f for f in files]
    for p in inputs:
        if not p.exists():
            pytest.skip(f"{p} not present")
    opts = ConvertOptions(
        symbol=extra.get("symbol"),
        exchange_info=shared_data / extra["exchange_info"] if "exchange_info" in extra else None,
    )
    out = tmp_path_factory.mktemp("book_real") / f"{request.param}.npy"
    res = binance.convert(inputs, out, opts)
    assert res.events > 0
    return request.param, Path(res.out)


def test_kernel_and_reference_agree_at_every_event(converted: tuple[str, Path]) -> None:
    name, path = converted
    feed = open_feed(path)
    tick = feed.instrument.tick_size
    book = make_book(tick)
    ref = ReferenceBook(tick)
    n_all = len(feed.events)
    checked = 0
    touch_changes = 0
    prev_best = None
    for start in range(0, n_all, CHUNK):
        ev = np.asarray(feed.events[start : start + CHUNK])
        n = len(ev)
        counts = np.zeros((n, 2), np.int64)
        px = np.zeros((n, 2, TOP))
        qty = np.zeros((n, 2, TOP))
        kernel_trace(ev, book.bid, book.ask, book.st, tick, counts, px, qty)
        r_counts, r_ticks, r_qty = reference_trace(ref, ev)
        r_px = np.where(np.arange(TOP) < r_counts[:, :, None], r_ticks * tick, 0.0)
        ok = (
            np.all(counts == r_counts, axis=1)
            & np.all(px == r_px, axis=(1, 2))
            & np.all(qty == r_qty, axis=(1, 2))
        )
        if not ok.all():
            i = int(np.argmin(ok))
            raise AssertionError(
                f"{name}: books differ after event {start + i} {ev[i]}:\n"
                f"kernel    {side_pairs(px[i], qty[i])}\n"
                f"reference {side_pairs(r_px[i], r_qty[i])}"
            )
        best = px[:, :, 0]
        if prev_best is not None:
            best = np.vstack([prev_best[None], best])
        touch_changes += int(np.sum(np.any(np.diff(best, axis=0) != 0, axis=1)))
        prev_best = px[-1, :, 0]
        checked += n
    assert checked == n_all
    assert touch_changes > 20  # the comparison followed a moving touch, not a frozen book
    # Deep levels: whatever the kernel holds is right; what it lacks is covered by its drops.
    base = int(book.st[ST_BASE])
    lacking = 0
    for side, arr, levels in ((BID, book.bid, ref.bids), (ASK, book.ask, ref.asks)):
        held = {base + int(i): float(arr[i]) for i in np.flatnonzero(arr)}
        for t, q in held.items():
            assert levels.get(t) == q, f"{name}: kernel level {t} on side {side} not in reference"
        lacking += sum(1 for t in levels if t not in held)
    assert lacking <= int(book.st[ST_DROPPED])


# kernel_trace compiles the core's book update in: bound to the core's sources (kernel_cache.py)
kernel_cache.bind(__name__, kernel_cache.CORE)
