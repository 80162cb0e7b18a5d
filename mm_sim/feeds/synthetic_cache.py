"""A content-addressed disk cache of generated synthetic days.

Why: the default soak regenerates the same three-hour day on every run (seconds of CPU for
7 M events), and the generator is deterministic: the same parameters, seed, duration and
generator code give the same bytes. So a day is generated once and then read back.

The key is a hash of everything the output depends on: the parameters (every field, defaults
included), the seed, the duration, the event record layout, ``GENERATOR_VERSION``, the source
text of the generator's two modules (an edit anywhere in them is a new key, even one that forgot
to bump the version), the numpy and numba versions and the platform. An entry is two files, written
temp + fsync + rename, the data first: ``KEY.events`` (the raw records, mapped copy-on-write
when read) and ``KEY.json`` (the
key's inputs, the record count and a CRC-32 of the data), whose presence commits the entry.
Opening checks the metadata against the key, the data's size against the count and the CRC
against the data; anything that does not match (a torn write, a flipped bit, a foreign file) is
deleted and the day is generated again. Nothing about the cache reaches a run's records.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.config import LocalSettings, load_local_settings
from mm_sim.events import EVENT_DTYPE, Instrument, temp_file_beside
from mm_sim.feeds import synthetic, synthetic_kernel
from mm_sim.logs import get_logger

log = get_logger("mm_sim.feeds.cache")

FORMAT = 1  # of the entry files themselves
_DATA, _META = ".events", ".json"


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mm_sim" / "synthetic"


def cache_dir(settings: LocalSettings) -> Path | None:
    """The cache directory, or None when the cache is switched off."""
    if not settings.synthetic_cache:
        return None
    return Path(settings.synthetic_cache_dir) if settings.synthetic_cache_dir else default_dir()


def _source_digest() -> str:
    h = hashlib.sha256()
    for mod in (synthetic, synthetic_kernel):
        assert mod.__file__ is not None
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()


def key_inputs(params: synthetic.SyntheticParams, seed: int, duration_s: float) -> dict[str, Any]:
    """Everything a generated day depends on (the cache key is their hash)."""
    import numba

    return {
        "format": FORMAT,
        "generator_version": synthetic.GENERATOR_VERSION,
        "generator_source_sha256": _source_digest(),
        "params": params.model_dump(mode="json"),
        "seed": int(seed),
        "duration_s": float(duration_s).hex(),  # exact, whatever the float
        "event_dtype": str(EVENT_DTYPE.descr),
        "numpy": np.__version__,
        "numba": numba.__version__,
        # libm's last-bit rounding shapes the path (docs/SYNTHETIC.md, "Determinism"): a cache
        # directory shared between machines keeps one day per platform
        "platform": "-".join([sys.platform, platform.machine(), *platform.libc_ver()]),
    }


def cache_key(inputs: dict[str, Any]) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def generate_cached(
    params: synthetic.SyntheticParams,
    seed: int,
    duration_s: float,
    settings: LocalSettings | None = None,
) -> tuple[np.ndarray, Instrument]:
    """``synthetic.generate`` through the cache (the same events, byte for byte)."""
    settings = settings if settings is not None else load_local_settings()
    root = cache_dir(settings)
    if root is None:
        return synthetic.generate(params, seed=seed, duration_s=duration_s)
    inputs = key_inputs(params, seed, duration_s)
    key = cache_key(inputs)
    events = _open(root, key, inputs)
    if events is None:
        events, _ = synthetic.generate(params, seed=seed, duration_s=duration_s)
        try:
            _store(root, key, inputs, events)
            _evict(root, settings.synthetic_cache_max_mb * 1e6, keep=key)
        except OSError as exc:  # a full or read-only disk costs a regeneration next time only
            log.warning("synthetic cache not written", dir=str(root), error=str(exc))
    return events, synthetic.instrument_for(params)


def _drop(root: Path, key: str) -> None:
    """Delete an entry, as far as the cache's filesystem allows: a cache is an optimisation,
    and one that cannot be changed (read-only, or MM_SYNTHETIC_CACHE_DIR naming a file) costs
    a regeneration, never the run (that was exit 1 before any event was generated)."""
    try:
        for suffix in (_META, _DATA):  # metadata first: the entry is never half-present
            (root / f"{key}{suffix}").unlink(missing_ok=True)
    except OSError as exc:
        log.warning("synthetic cache entry not removed", dir=str(root), error=str(exc))


def _open(root: Path, key: str, inputs: dict[str, Any]) -> np.ndarray | None:
    """The cached events of ``key``, or None (missing, or invalid and then deleted)."""
    meta_path, data_path = root / f"{key}{_META}", root / f"{key}{_DATA}"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return _invalid(root, key, f"unreadable metadata: {exc}")
    if not isinstance(meta, dict) or meta.get("inputs") != inputs:
        return _invalid(root, key, "metadata does not match the key")
    count, crc = meta.get("count"), meta.get("crc32")
    if not isinstance(count, int) or not isinstance(crc, int) or count < 0:
        return _invalid(root, key, "metadata without count or crc32")
    want = count * EVENT_DTYPE.itemsize
    try:
        size = data_path.stat().st_size
        # A private (copy-on-write) map: the pages are the page cache's until someone writes,
        # so a warm day costs no copy, and the array is writable like a generated one.
        events = (
            np.memmap(data_path, dtype=EVENT_DTYPE, mode="c", shape=(count,)).view(np.ndarray)
            if size == want and count
            else np.empty(0, dtype=EVENT_DTYPE)
        )
    except OSError as exc:
        return _invalid(root, key, f"unreadable data: {exc}")
    if size != want:
        return _invalid(root, key, f"data is {size} bytes, expected {want}")
    if zlib.crc32(events.data.cast("B")) != crc:
        return _invalid(root, key, "data does not match its CRC-32")
    # Recently used: evicted last. A cache shared read-only keeps its order as it is.
    with contextlib.suppress(OSError):
        os.utime(meta_path)
    return events


def _invalid(root: Path, key: str, why: str) -> np.ndarray | None:
    log.warning("synthetic cache entry invalid; generating again", key=key, reason=why)
    _drop(root, key)
    return None


def _write(path: Path, chunks: list[memoryview | bytes]) -> None:
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            for c in chunks:
                fh.write(c)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _store(root: Path, key: str, inputs: dict[str, Any], events: np.ndarray) -> None:
    root.mkdir(parents=True, exist_ok=True)
    buf = np.ascontiguousarray(events).data.cast("B")
    _write(root / f"{key}{_DATA}", [buf])
    meta = {"inputs": inputs, "count": len(events), "crc32": zlib.crc32(buf)}
    _write(root / f"{key}{_META}", [(json.dumps(meta, indent=1) + "\n").encode()])


def _evict(root: Path, max_bytes: float, keep: str) -> None:
    """Remove the least recently used entries until the cache fits ``max_bytes`` (never
    ``keep``, the entry just used), and data files whose metadata is gone."""
    entries = []
    for meta in root.glob(f"*{_META}"):
        data = meta.with_suffix(_DATA)
        try:
            entries.append((meta.stat().st_mtime, meta.stem, data.stat().st_size))
        except OSError:
            continue
    known = {stem for _, stem, _ in entries}
    for data in root.glob(f"*{_DATA}"):
        if data.stem not in known and data.stem != keep:
            data.unlink(missing_ok=True)  # an entry whose metadata never landed
    total = sum(size for _, _, size in entries)
    for _, stem, size in sorted(entries):
        if total <= max_bytes:
            break
        if stem != keep:
            _drop(root, stem)
            total -= size
