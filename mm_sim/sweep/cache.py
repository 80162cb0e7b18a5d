"""What a sweep worker keeps between cells: the feeds it replays and the profiles it parses.

Why: a worker runs hundreds of cells on the same few feeds, and before this each run opened its
feed afresh — a hash of the whole file to check it against its sidecar (a few percent of
a run) and a read-only memory map that the engine copied chunk by chunk (it needs a writeable
array for its one compiled signature). Neither changes between cells, so a worker does them
once per feed: the first run on a feed opens and verifies it as before and, when it fits the
budget, reads its events into memory; later runs reuse that array. Results are the same bytes:
the events are the same events, and nothing in a run writes into them (tests/test_sweep_cache.py
runs cells and sweeps with the cache cold, warm and off and compares their outputs byte for
byte).

A cached feed is keyed on the identity of both files (device, inode, size, modification time
of the ``.npy`` and of its sidecar): a feed replaced or rewritten at the same path (a new
publish is a new inode) is opened and verified again, never served stale. Entries whose files
changed are dropped on the next look-up, and the least recently used feed goes first when the
budget is exceeded.

The budget is ``MM_SWEEP_FEED_CACHE_MB`` per worker process (``LocalSettings``, default 1024): a
feed larger than it stays memory-mapped (only the open and the hash are saved); 0 turns the
cache off (every run opens and verifies its feed, as before).

Each cached feed also keeps its iterations' ws_lag p95 (by clock shift and feed rows): the
figure depends on the events alone, and computing it was a few percent of a run.

Profiles: each task carries its cell's full profile as JSON; a worker validates each distinct
one once (the models are frozen, so one validated instance can be shared by every run).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.config import Profile, load_local_settings
from mm_sim.events import Instrument, open_feed, sidecar_path

BUDGET_ENV = "MM_SWEEP_FEED_CACHE_MB"  # LocalSettings.sweep_feed_cache_mb
_PROFILES_KEPT = 64  # distinct cell profiles: a grid's profile fields rarely have more


@dataclass(frozen=True)
class CachedFeed:
    path: Path
    events: np.ndarray  # in memory (writeable) when it fits the budget, else the memory map
    instrument: Instrument
    source: dict[str, Any]  # the sidecar's provenance (a synthetic day's identity)
    in_memory: bool
    # ws_lag p95 by clock shift, then by feed rows: the same for every run on this feed
    # (runtime/feed_lag.py), so a worker computes each iteration's once
    lag_p95: dict[int, dict[tuple[int, int], float]] = field(default_factory=dict)

    def lag_memo(self, shift_ns: int) -> dict[tuple[int, int], float]:
        return self.lag_p95.setdefault(shift_ns, {})


_lock = threading.Lock()
_feeds: OrderedDict[str, tuple[tuple[int, ...], CachedFeed]] = OrderedDict()
_profiles: OrderedDict[str, Profile] = OrderedDict()
_stats = {"feed_opens": 0, "feed_hits": 0, "profile_parses": 0, "profile_hits": 0}


def budget_bytes() -> int:
    """The per-process budget for feeds held in memory; 0 turns the cache off."""
    return int(load_local_settings().sweep_feed_cache_mb * (1 << 20))


def _identity(path: Path) -> tuple[int, ...]:
    out: list[int] = []
    for p in (path, sidecar_path(path)):
        st = p.stat()
        out += [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    return tuple(out)


def _resident() -> int:
    return sum(f.events.nbytes for _, f in _feeds.values() if f.in_memory)


def _open(path: Path, budget: int) -> CachedFeed:
    feed = open_feed(path)  # verified against its sidecar, as every replay is
    events = feed.events
    in_memory = 0 < events.nbytes <= budget
    if in_memory:
        # A plain writeable array: the engine then runs on slices of it without copying each
        # chunk, and no memory map's per-slice overhead remains.
        events = np.array(events)
    return CachedFeed(feed.path, events, feed.instrument, dict(feed.meta.source), in_memory)


def feed(path: str | os.PathLike[str]) -> CachedFeed:
    """The feed at ``path``, opened (and verified) once per process while its files stay the
    same; opened every time when the cache is off."""
    p = Path(path)
    budget = budget_bytes()
    if budget == 0:
        _stats["feed_opens"] += 1
        return _open(p, 0)
    key = str(p.resolve())
    ident = _identity(p)
    with _lock:
        for k in [k for k, (i, _) in _feeds.items() if k != key and not _same(k, i)]:
            del _feeds[k]  # gone or replaced: its memory is not kept for nothing
        hit = _feeds.get(key)
        if hit is not None and hit[0] == ident:
            _feeds.move_to_end(key)
            _stats["feed_hits"] += 1
            return hit[1]
        _feeds.pop(key, None)
        entry = _open(p, budget)
        _stats["feed_opens"] += 1
        if _identity(p) != ident:
            return entry  # replaced while it was read: use it once, keep nothing
        _feeds[key] = (ident, entry)
        while _resident() > budget and len(_feeds) > 1:
            _feeds.popitem(last=False)
        return entry


def _same(key: str, ident: tuple[int, ...]) -> bool:
    try:
        return _identity(Path(key)) == ident
    except OSError:
        return False


def profile(data: dict[str, Any]) -> Profile:
    """``Profile.model_validate(data)``, once per distinct profile in this process."""
    key = json.dumps(data, sort_keys=True)
    with _lock:
        hit = _profiles.get(key)
        if hit is not None:
            _profiles.move_to_end(key)
            _stats["profile_hits"] += 1
            return hit
    parsed = Profile.model_validate(data)
    with _lock:
        _stats["profile_parses"] += 1
        _profiles[key] = parsed
        while len(_profiles) > _PROFILES_KEPT:
            _profiles.popitem(last=False)
    return parsed


def clear() -> None:
    """Forget every cached feed and profile (the driver calls this on each worker at the end of
    a sweep, so a long-lived cluster does not hold a finished sweep's days in memory)."""
    with _lock:
        _feeds.clear()
        _profiles.clear()


def stats() -> dict[str, Any]:
    """Counters since the process started, and what is held now (for tests and the bench)."""
    with _lock:
        return {
            **_stats,
            "feeds_held": len(_feeds),
            "bytes_in_memory": _resident(),
        }
