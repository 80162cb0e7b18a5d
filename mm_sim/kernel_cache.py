"""Compiled kernels on disk that go stale when any source they are built from changes.

Why: numba keys each function's on-disk cache entry on its own file only. A kernel that calls
(and so compiles into itself) a kernel of another module, or reads its constants, keeps the old
code when only that other module changes: an upgraded mm_sim would then run yesterday's parser
or book update from ``NUMBA_CACHE_DIR`` without a word. ``bind`` ties every kernel of a module
to a digest of all the sources of its group, so any edit there compiles the group again.

Two groups, so that editing the capture converter does not recompile the core (tens of
seconds) and the reverse: ``CORE`` (the engine, and the synthetic generator and feed inspector
that compile its book update into their own kernels) and ``BINANCE`` (the live parsers, the
depth sync and the capture converter's kernels). A module of a group binds itself when it is
imported, before any of its kernels is compiled or loaded.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent

# The files whose code or constants end up in each group's compiled kernels.
CORE = (
    "events.py", "core/records.py", "core/book.py", "core/quote.py", "core/limiter.py",
    "core/account.py", "core/match.py", "core/orders.py", "core/fills.py", "core/rng.py",
    "core/params.py", "core/strategy.py", "core/driver.py", "core/timeline.py", "core/engine.py",
    "core/venue_state.py",
)  # fmt: skip
BINANCE = (
    "events.py", "core/jitcall.py", "venues/binance/messages.py", "venues/binance/fastparse.py",
    "venues/binance/fill_events.py", "venues/binance/sync.py",
    "feeds/convert/binance_inputs.py", "feeds/convert/binance_book.py",
    "feeds/convert/binance_columns.py", "feeds/convert/binance_fast.py",
    "feeds/convert/binance_lines.py", "feeds/convert/binance_block.py",
)  # fmt: skip
_TAGS = {CORE: "mm_sim-core", BINANCE: "mm_sim-binance"}


@functools.cache
def digest(group: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for rel in group:
        h.update(rel.encode() + b"\0")
        h.update((_ROOT / rel).read_bytes())
    return h.hexdigest()


def bind(module_name: str, group: tuple[str, ...]) -> None:
    """Make the on-disk cache entry of every kernel defined in ``module_name`` depend on the
    sources of ``group`` as well as on its own file (numba's own stamp is kept inside)."""
    mod = sys.modules[module_name]
    stamp_of_group = (_TAGS[group], digest(group))
    for obj in vars(mod).values():
        cache = getattr(obj, "_cache", None)
        cfile = getattr(cache, "_cache_file", None)
        stamp = getattr(cfile, "_source_stamp", None)
        py_func = getattr(obj, "py_func", None)
        if stamp is None or getattr(py_func, "__module__", None) != module_name:
            continue  # not a cached kernel, or another module's (bound there)
        if not (isinstance(stamp, tuple) and len(stamp) == 3 and stamp[1:] == stamp_of_group):
            setattr(cfile, "_source_stamp", (stamp, *stamp_of_group))  # noqa: B010
