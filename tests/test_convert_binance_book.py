"""The converter's touch book (hash table + lazy heaps) against the venue's LightBook reference,
and its inflater against the standard library's gzip reader."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_sim.feeds.convert.binance_book import TouchBook
from mm_sim.feeds.convert.binance_inputs import Blocks
from mm_sim.venues.binance.fastparse import flat_levels
from mm_sim.venues.binance.sync import LightBookRef

Lv = list[tuple[bool, int, int]]


def split(levels: Lv) -> tuple[list, list]:
    bids = [(50.0 + px * 0.5, float(q)) for is_bid, px, q in levels if is_bid]
    asks = [(55.0 + px * 0.5, float(q)) for is_bid, px, q in levels if not is_bid]
    return bids, asks


def check(fast: TouchBook, ref: LightBookRef, crossed: bool) -> None:
    assert crossed == ref.crossed() == fast.crossed()
    assert (fast.best_bid(), fast.best_ask()) == (ref.best_bid(), ref.best_ask())
    assert fast.bids == ref.bids and fast.asks == ref.asks


@settings(max_examples=300, deadline=None)
@given(
    snap=st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.integers(0, 3)), max_size=20),
    diffs=st.lists(
        st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.integers(0, 3)), max_size=12),
        max_size=30,
    ),
)
def test_touch_book_matches_the_reference(snap: Lv, diffs: list[Lv]) -> None:
    """Several levels per diff, a price set and removed in one diff, removals of absent
    prices, a snapshot with duplicates, and growth from the smallest capacity."""
    fast = TouchBook(capacity=1)
    ref = LightBookRef()
    fast.load(*split(snap))
    ref.load(*split(snap))
    for d in [[], *diffs]:
        bids, asks = split(d)
        ref.apply(bids, asks)
        check(fast, ref, fast.apply_flat(flat_levels(bids), flat_levels(asks)))


def test_touch_book_on_a_long_random_walk() -> None:
    """Thousands of levels far from the touch (the futures depth stream's shape), the touch
    walking through them, heaps rebuilt and tables grown on the way."""
    rnd = random.Random(7)
    fast, ref = TouchBook(), LightBookRef()
    mid = 1000
    crossings = 0
    for step in range(4000):
        mid += rnd.choice((-1, 0, 1))
        bids = [(float(mid - rnd.randint(1, 3000)), float(rnd.randint(0, 2))) for _ in range(8)]
        asks = [(float(mid + rnd.randint(1, 3000)), float(rnd.randint(0, 2))) for _ in range(8)]
        if step % 97 == 0:  # now and then through the other side
            bids.append((float(mid + rnd.randint(0, 5)), 1.0))
        ref.apply(bids, asks)
        crossed = fast.apply_flat(flat_levels(bids), flat_levels(asks))
        crossings += crossed
        assert crossed == ref.crossed()
        assert (fast.best_bid(), fast.best_ask()) == (ref.best_bid(), ref.best_ask())
        if step % 500 == 0:
            assert fast.bids == ref.bids and fast.asks == ref.asks
    assert crossings > 0 and len(ref.bids) > 1000


def test_clear_empties_both_sides() -> None:
    b = TouchBook()
    b.load([(1.0, 1.0)], [(2.0, 1.0)])
    b.clear()
    assert (b.best_bid(), b.best_ask(), b.bids, b.asks, b.crossed()) == (None, None, {}, {}, False)


def _read_all(read: object) -> tuple[bytes, str | None]:
    out = []
    try:
        while chunk := read():  # type: ignore[operator]
            out.append(chunk)
    except EOFError as exc:
        return b"".join(out), str(exc)
    return b"".join(out), None


@pytest.mark.parametrize("lib", ["isal", "zlib"])
@pytest.mark.parametrize("case", ["text", "zeros", "members", "empty", "cut", "cut_zeros"])
@pytest.mark.parametrize("size", [1 << 20, 1000])
def test_blocks_read_what_gzip_reads(
    tmp_path: Path, case: str, size: int, lib: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same bytes as GzipFile.read1, and the same EOFError at a cut: chained members, zero
    padding, output far larger than its input (bounded per block), an empty member; with
    ISA-L's inflate and with the standard library's (the fallback when isal is missing)."""
    import zlib

    from mm_sim.feeds.convert import binance_inputs

    if lib == "zlib":
        monkeypatch.setattr(binance_inputs, "_inflate_lib", zlib)
    rnd = random.Random(1)
    text = b"".join(b"%d %08x\n" % (i, rnd.getrandbits(32)) for i in range(60000))
    data = {
        "text": gzip.compress(text),
        "zeros": gzip.compress(bytes(20_000_000)),
        "members": gzip.compress(text[:999]) + b"\0\0" + gzip.compress(text[999:]) + b"\0",
        "empty": gzip.compress(b""),
        "cut": gzip.compress(text)[: len(gzip.compress(text)) // 2],
        "cut_zeros": gzip.compress(bytes(20_000_000))[:9000],
    }[case]
    path = tmp_path / "x.gz"
    path.write_bytes(data)
    blocks = Blocks(path, size, track=False)
    got = _read_all(blocks.read1)
    blocks.close()
    with gzip.open(path, "rb") as fh:
        want = _read_all(lambda: fh.read1(1 << 20))
    assert got == want
    assert (want[1] is not None) == case.startswith("cut")


def test_on_grid_is_the_numpy_expression() -> None:
    """The chunk check's grid test, value by value in numba, against the numpy expression it
    replaced: decimals of every length, halfway cases, huge and tiny values, NaN and inf."""
    from mm_sim.feeds.convert.binance_columns import on_grid

    rnd = np.random.default_rng(5)
    values = [
        np.round(rnd.uniform(0, 1e5, 2000), rnd.integers(0, 9)),
        rnd.uniform(0, 1, 50),
        np.array([0.5, 1.5, 2.5, 0.125, 0.05, 0.15, 0.25, 1e300, 5e-324, 61800.3, 0.001]),
        np.array([1.0, np.nan]),
        np.array([np.inf]),
        np.zeros(0),
    ]
    checked = 0
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 * 10**d: inf, as before
        for x in values:
            for d in range(19):
                scale = 10.0**d
                want = bool(np.array_equal(np.rint(x * scale) / scale, x))
                assert on_grid(x, scale) == want, (x[:5], d)
                for single in x[:300]:
                    one = np.array([single])
                    assert on_grid(one, scale) == bool(
                        np.array_equal(np.rint(one * scale) / scale, one)
                    )
                    checked += 1
    assert checked > 5000
