"""Hand-built Binance capture lines (hftbacktest's "<receive ns> <message>" format) for the
converter's tests, and the touch a converted feed replays to."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.core.book import best_ask, best_bid, book_apply_events, make_book
from mm_sim.events import open_feed

S = "ABCUSDT"
NS = 1_000_000_000


def replay_touch(path: Path) -> tuple[float, float, np.ndarray]:
    feed = open_feed(path)
    ev = np.array(feed.events)
    book = make_book(feed.instrument.tick_size)
    book_apply_events(book.bid, book.ask, book.st, book.tick_size, ev)
    return (
        best_bid(book.bid, book.st, book.tick_size),
        best_ask(book.ask, book.st, book.tick_size),
        ev,
    )


def _lv(levels: Any) -> list[list[str]]:
    return [[f"{p}", f"{q}"] for p, q in levels]


def depth(sym: str, first: int, final: int, e_ms: int, b=(), a=(), pu: int | None = None) -> str:
    d: dict[str, Any] = {"e": "depthUpdate", "E": e_ms, "s": sym, "U": first, "u": final}
    if pu is not None:
        d["T"] = e_ms
        d["pu"] = pu
    d["b"], d["a"] = _lv(b), _lv(a)
    return json.dumps({"stream": f"{sym.lower()}@depth@100ms", "data": d})


def trade(sym: str, e_ms: int, p: float, q: float, m: bool, agg: bool = False, x: str = "") -> str:
    d: dict[str, Any] = {"e": "aggTrade" if agg else "trade", "E": e_ms, "s": sym}
    d["a" if agg else "t"] = 7
    d.update(p=f"{p}", q=f"{q}", T=e_ms - 1, m=m)
    if x:
        d["X"] = x
    return json.dumps({"stream": f"{sym.lower()}@{'aggTrade' if agg else 'trade'}", "data": d})


def ticker(sym: str, u: int, b: float, a: float) -> str:
    d = {"u": u, "s": sym, "b": f"{b}", "B": "1", "a": f"{a}", "A": "1"}
    return json.dumps({"stream": f"{sym.lower()}@bookTicker", "data": d})


def rest(lid: int, bids, asks) -> str:
    return json.dumps({"lastUpdateId": lid, "bids": _lv(bids), "asks": _lv(asks)})


def write_hft(path: Path, rows: list[tuple[int, str]], gz: bool = False) -> Path:
    text = "".join(f"{t} {m}\n" for t, m in rows).encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    return path


def gap_rows() -> list[tuple[int, str]]:
    return [
        (1 * NS, depth(S, 100, 101, 1000, b=[(99.5, 1)])),
        (2 * NS, rest(100, [(99, 1), (98, 2)], [(101, 1), (102, 1)])),
        (3 * NS, depth(S, 102, 103, 3000, a=[(101, 0)])),
        (3 * NS, trade(S, 3000, 102, 0.5, m=False)),
        (4 * NS, depth(S, 110, 111, 4000, b=[(99.7, 1)])),  # 104..109 lost
        (5 * NS, depth(S, 112, 113, 5000, a=[(103.5, 2)])),
        (6 * NS, rest(111, [(97, 5)], [(103, 4)])),
        (7 * NS, depth(S, 114, 114, 7000, b=[(97.5, 1)])),
        (8 * NS, ticker(S, 114, 97.5, 103)),
    ]
