"""The one event layout everything downstream reads, and its on-disk form.

A feed is a flat array of fixed-size records (``EVENT_DTYPE``) plus instrument metadata kept in
a JSON sidecar. On disk it is a plain ``.npy`` file (so it can be memory-mapped and replayed in
chunks larger than RAM) next to ``<name>.json``. Writers stream records into a temp file with a
fixed-size header that is filled in at close, then rename: a crashed conversion never leaves a
half-written feed under the final name.

Event semantics (all prices and quantities are absolute, never deltas):

- ``KIND_CLEAR``: drop the whole book (both sides). Precedes a snapshot that re-bases the book.
- ``KIND_SNAPSHOT``: one level of a snapshot: ``side`` (+1 bid, -1 ask), ``price``, ``qty``.
- ``KIND_DEPTH``: a level's new total quantity; ``qty == 0`` removes the level.
- ``KIND_TRADE``: a print; ``side`` is the aggressor (+1 buyer-initiated, -1 seller-initiated).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import xxhash

from mm_sim import durable
from mm_sim.errors import UserError

if TYPE_CHECKING:
    from mm_sim.feeds.clock import ClockModel

try:  # advisory locks (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# Fields are ordered so every record is naturally aligned (40 bytes): numba reads aligned
# records without the per-field penalty of packed layouts.
EVENT_DTYPE = np.dtype(
    [
        ("exch_ts", np.int64),  # exchange event time, ns since epoch
        ("local_ts", np.int64),  # local receive time, ns since epoch
        ("price", np.float64),
        ("qty", np.float64),
        ("kind", np.int32),
        ("side", np.int32),
    ],
    align=True,
)

KIND_CLEAR = 1
KIND_SNAPSHOT = 2
KIND_DEPTH = 3
KIND_TRADE = 4
KIND_NAMES = {
    KIND_CLEAR: "clear",
    KIND_SNAPSHOT: "snapshot",
    KIND_DEPTH: "depth",
    KIND_TRADE: "trade",
}

BID = 1
ASK = -1

FORMAT_VERSION = 1
# A fixed header size lets a streaming writer reserve the header up front and fill in the final
# record count at close without moving the data (the .npy format allows any padding that keeps
# the header a multiple of 64 bytes and ends it with a newline).
_NPY_HEADER_LEN = 256


@dataclass
class Instrument:
    """What the book, quoting and accounting need to know about the traded instrument.

    ``inverse``: a coin-margined contract (Binance COIN-M): quantities are contracts worth
    ``contract_size`` quote units each, and money (PnL, fees, cash) is in the base coin
    (docs/CORE.md, "Inverse contracts"). A linear instrument has no contract size.
    """

    symbol: str
    venue: str
    tick_size: float
    lot_size: float
    price_decimals: int | None = None
    inverse: bool = False
    contract_size: float | None = None

    def __post_init__(self) -> None:
        for name in ("tick_size", "lot_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
                raise UserError(f"instrument {self.symbol}: {name} must be a number, got {v!r}")
        if not (self.tick_size > 0 and np.isfinite(self.tick_size)):
            raise UserError(
                f"instrument {self.symbol}: tick_size must be > 0, got {self.tick_size}"
            )
        if not (self.lot_size > 0 and np.isfinite(self.lot_size)):
            raise UserError(f"instrument {self.symbol}: lot_size must be > 0, got {self.lot_size}")
        pd = self.price_decimals
        if pd is not None and (
            isinstance(pd, bool) or not isinstance(pd, int) or not 0 <= pd <= 18
        ):
            # (prices are written with this many decimals: the fake exchange's messages)
            raise UserError(
                f"instrument {self.symbol}: price_decimals must be an integer 0..18 or null, "
                f"got {pd!r}"
            )
        if not isinstance(self.inverse, bool):
            raise UserError(f"instrument {self.symbol}: inverse must be true or false")
        if self.inverse:
            c = self.contract_size
            if c is None or not (c > 0 and np.isfinite(c)):
                raise UserError(
                    f"instrument {self.symbol}: an inverse contract needs contract_size > 0 "
                    f"(quote currency per contract, e.g. 100 for BTCUSD_PERP), got {c}"
                )

    def to_json(self) -> dict[str, Any]:
        """The sidecar form; a linear instrument keeps the fields it always had."""
        d = asdict(self)
        if not self.inverse:
            d.pop("inverse")
            d.pop("contract_size")
        return d


@dataclass
class FeedMeta:
    """Sidecar metadata: the instrument plus provenance of the events."""

    instrument: Instrument
    count: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # The .npy this sidecar was published with: {"bytes": data bytes after the header,
    # "xxh3_128" (older feeds: "blake2b"): hex digest of them}. A sidecar beside other data (a
    # publish cut short by a crash or a full disk, a file copied over) is refused on open.
    # Absent in older feeds.
    data: dict[str, Any] = field(default_factory=dict)
    # How far the recorder's clock is off the exchange's (mm_sim.feeds.clock); absent in older
    # feeds (then estimated on open).
    clock: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["instrument"] = self.instrument.to_json()
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> FeedMeta:
        inst = data.get("instrument")
        if not isinstance(inst, dict):
            raise UserError(f"{where}: field 'instrument' = {inst!r}: expected an object")
        try:
            instrument = Instrument(**inst)
        except (TypeError, UserError) as exc:  # a field unknown or missing, or a bad value
            raise UserError(f"{where}: field 'instrument': {exc}") from None
        count = data.get("count", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise UserError(f"{where}: field 'count' = {count!r}: expected an event count >= 0")
        version = data.get("format_version", FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise UserError(
                f"{where}: field 'format_version' = {version!r}: expected an integer >= 1"
            )
        if version > FORMAT_VERSION:
            raise UserError(
                f"{where}: field 'format_version' = {version}: written by a newer mm_sim (this "
                f"one reads format {FORMAT_VERSION}); upgrade mm_sim to replay it"
            )
        objects = {}
        for key in ("source", "stats", "data"):
            v = data.get(key, {})
            if not isinstance(v, dict):
                raise UserError(f"{where}: field '{key}' = {v!r}: expected an object")
            objects[key] = dict(v)
        return cls(
            instrument=instrument,
            count=count,
            format_version=version,
            clock=data.get("clock"),
            **objects,
        )


def sidecar_path(npy_path: Path) -> Path:
    return npy_path.with_suffix(".json")


def _npy_header(count: int) -> bytes:
    header = {"descr": np.lib.format.dtype_to_descr(EVENT_DTYPE), "fortran_order": False}
    text = repr({**header, "shape": (count,)})
    body = b"\x93NUMPY\x01\x00"
    pad = _NPY_HEADER_LEN - len(body) - 2 - len(text) - 1
    if pad < 0:
        raise AssertionError("npy header does not fit the reserved size")
    hdr = (text + " " * pad + "\n").encode("latin1")
    return body + len(hdr).to_bytes(2, "little") + hdr


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (``os.umask`` can
    only be read by setting it, which for a moment applies to every other thread's files)."""
    status = "/proc/self/status"  # Linux
    with contextlib.suppress(OSError, ValueError), open(status, encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file_beside(path: Path) -> tuple[int, str]:
    """A hidden temp file ``.NAME.*.tmp`` next to ``path``, to be renamed onto it.

    ``mkstemp`` creates it 0600 whatever the umask, and the rename would publish that: reports
    and feeds unreadable to the group a shared filesystem (a Dask cluster's workers) relies on.
    The file gets the mode ``open()`` would have given it (0666 minus the umask) instead.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    if hasattr(os, "fchmod"):  # POSIX (Windows has no group or other modes)
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via temp file + fsync + rename so readers never see a partial file.

    A failure names ``path`` (the user's file), not the hidden temp file beside it: a folder
    where the file should be or a parent that is a file is a usage error (exit 2); a read-only
    or full disk stays an OSError, with its errno, for the CLI's exit 1."""
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{path}: a part of its folder {path.parent} is a file") from None
    try:
        fd, tmp = temp_file_beside(path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            durable.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def hold_lock(path: Path, busy: str) -> IO[bytes]:
    """Take an exclusive advisory lock on ``path`` (created if needed) without waiting; the
    caller keeps the returned handle open for as long as it writes. Two writers on one
    directory would interleave appends and redo each other's work; ``busy`` is the error."""
    fh = open(path, "ab")  # noqa: SIM115 - held by the caller
    if fcntl is not None:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise UserError(busy) from None
    return fh


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


# The digest new sidecars carry. Why XXH3: the hash is there to catch a .npy beside the wrong
# sidecar, not an adversary, and BLAKE2b cost ~1 ns a byte: a tenth of a Binance conversion and
# most of a feed's open; XXH3-128 runs at memory speed. Sidecars written before carry
# "blake2b" and are verified with it.
DATA_HASH = "xxh3_128"
RECORDS_HASH = "xxh3_64"  # a run's records per iteration (report/rundir.py), not a sidecar's
_HASHES: dict[str, Any] = {
    "xxh3_128": xxhash.xxh3_128,
    "blake2b": lambda: hashlib.blake2b(digest_size=16),
    RECORDS_HASH: xxhash.xxh3_64,
}


def _new_hash(name: str = DATA_HASH) -> Any:
    return _HASHES[name]()


def data_hash_name(data: dict[str, Any]) -> str:
    """The digest a sidecar's ``data`` field carries (new feeds XXH3-128, older ones BLAKE2b)."""
    return next((name for name in _HASHES if name in data), DATA_HASH)


def try_lock(fh: IO[bytes]) -> bool:
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def clean_stale_temp_files(directory: Path, name: str, min_age_s: float = 0.0) -> list[Path]:
    """Remove the hidden temp files ``.NAME.*.tmp`` a killed writer left in ``directory``.

    A writer holds an advisory lock on its temp file while it writes, so a file whose lock can
    be taken belongs to nobody any more (without locks, files younger than ``min_age_s`` are
    kept). Returns what was removed.
    """
    removed: list[Path] = []
    try:
        candidates = list(directory.glob(f".{name}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        try:
            with open(tmp, "rb") as fh:
                if fcntl is None and time.time() - tmp.stat().st_mtime < min_age_s:
                    continue
                if not try_lock(fh):
                    continue
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


class FeedWriter:
    """Streams event chunks to ``path`` (a ``.npy``) in bounded memory; atomic on close.

    The temp file is locked while written (so the next writer of the same name can tell a
    killed writer's leftover from a live one and remove it), and the data is hashed on the
    way through so the sidecar names exactly the data it describes.
    """

    def __init__(self, path: str | os.PathLike[str], instrument: Instrument) -> None:
        self.path = Path(path)
        if self.path.suffix != ".npy":
            self.path = self.path.with_name(self.path.name + ".npy")
        self.instrument = instrument
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.removed_stale = clean_stale_temp_files(self.path.parent, self.path.name, 3600.0)
        fd, self._tmp = temp_file_beside(self.path)
        self._fh = os.fdopen(fd, "wb")
        try_lock(self._fh)
        self._fh.write(_npy_header(0))
        self._hash = _new_hash()
        self._bytes = 0
        from mm_sim.feeds.clock import LagSampler

        self._lags = LagSampler()  # the clock model is estimated on the way through
        self._closed = False

    def write(self, events: np.ndarray) -> None:
        if events.dtype != EVENT_DTYPE:
            raise TypeError(f"expected EVENT_DTYPE records, got {events.dtype}")
        data = np.ascontiguousarray(events).view(np.uint8).data
        self._fh.write(data)
        self._hash.update(data)
        self._bytes += len(data)
        self._lags.add(events)
        self.count += len(events)

    def close(
        self,
        source: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
        clock: ClockModel | None = None,
    ) -> Path:
        """Finish the file and publish it (and its sidecar) under the final name.

        Two renames cannot be one atomic step, so the sidecar carries the data's size and hash:
        a crash between them leaves a .npy beside no sidecar or beside the old one, and
        ``open_feed`` refuses both.
        """
        self._fh.seek(0)
        self._fh.write(_npy_header(self.count))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        meta = FeedMeta(
            self.instrument,
            self.count,
            source or {},
            stats or {},
            data={"bytes": self._bytes, DATA_HASH: self._hash.hexdigest()},
            clock=(clock or self._lags.model()).to_json(),
        )
        side = sidecar_path(self.path)
        side_fd, side_tmp = temp_file_beside(side)
        try:
            with os.fdopen(side_fd, "wb") as fh:
                fh.write((json.dumps(meta.to_json(), indent=2) + "\n").encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(self._tmp, self.path)
            os.replace(side_tmp, side)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(side_tmp)
            raise
        finally:
            self._fh.close()
        self._closed = True
        return self.path

    def abort(self) -> None:
        if not self._closed:
            self._fh.close()
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)
            self._closed = True

    def __enter__(self) -> FeedWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


def write_feed(
    path: str | os.PathLike[str],
    events: np.ndarray,
    instrument: Instrument,
    source: dict[str, Any] | None = None,
    stats: dict[str, Any] | None = None,
    clock: ClockModel | None = None,
) -> Path:
    with FeedWriter(path, instrument) as w:
        w.write(events)
        return w.close(source, stats, clock)


@dataclass
class Feed:
    """A feed opened for replay: a read-only memory map plus its metadata."""

    path: Path
    events: np.ndarray  # memory-mapped, read-only
    meta: FeedMeta

    @property
    def instrument(self) -> Instrument:
        return self.meta.instrument

    def chunks(self, chunk_size: int = 65536, start: int = 0) -> Iterator[np.ndarray]:
        """Yield consecutive slices; only the pages being read are resident."""
        n = len(self.events)
        for i in range(start, n, chunk_size):
            yield self.events[i : i + chunk_size]


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file's content, or one UserError naming the file and what was wrong."""
    a = "an" if what[:1] in "aeiou" else "a"
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected {a} {what} file")
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found") from None
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); expected {a} {what} file"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {what} file: {exc.strerror}") from None


def read_sidecar(p: Path) -> FeedMeta:
    side = sidecar_path(p)
    if not side.exists():
        raise UserError(f"{p}: missing metadata sidecar {side.name} (tick/lot size, symbol)")
    text = read_text_file(side, "feed metadata (JSON)")
    try:
        meta_json = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{side}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(meta_json, dict):
        raise UserError(f"{side}: feed metadata must be a JSON object")
    return FeedMeta.from_json(meta_json, str(side))


def data_digest(
    path: Path, offset: int, name: str = DATA_HASH, stop: int | None = None
) -> tuple[int, str]:
    """Size and digest ``name`` of a file's bytes from ``offset`` on, to ``stop`` when given
    (read in bounded chunks)."""
    h = _new_hash(name)
    n = 0
    want = None if stop is None else stop - offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        while want is None or n < want:
            block = fh.read(1 << 22 if want is None else min(1 << 22, want - n))
            if not block:
                break
            h.update(block)
            n += len(block)
    return n, h.hexdigest()


def open_feed(path: str | os.PathLike[str], verify: bool = True, check: bool = False) -> Feed:
    """Open a feed for replay, refusing a .npy that is not the one its sidecar describes.

    ``verify``: also hash the data against the sidecar (one sequential read of the file).
    ``check``: refuse content that cannot be replayed (``mm_sim.feeds.validate``); every
    replay (soak, sweep) opens with it, readers of the raw records need not.
    """
    p = Path(path)
    if p.suffix != ".npy" and p.with_name(p.name + ".npy").exists():
        p = p.with_name(p.name + ".npy")
    if not p.exists():
        raise UserError(f"{p}: feed file not found")
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected a .npy feed file")
    meta = read_sidecar(p)
    try:
        arr = np.load(p, mmap_mode="r")
    except (ValueError, EOFError, OSError) as exc:
        raise UserError(f"{p}: not a readable .npy event file ({exc})") from None
    if arr.dtype != EVENT_DTYPE:
        raise UserError(f"{p}: record layout {arr.dtype} is not mm_sim's event dtype")
    if arr.ndim != 1:
        raise UserError(f"{p}: expected a 1-d array of events, got shape {arr.shape}")
    side = sidecar_path(p)
    if meta.count != len(arr):
        raise UserError(
            f"{side}: field 'count' = {meta.count}, but {p.name} holds {len(arr)} events "
            "(the sidecar belongs to other data; convert or record the feed again)"
        )
    if meta.data:
        header = int(arr.offset) if isinstance(arr, np.memmap) else p.stat().st_size - arr.nbytes
        size = p.stat().st_size - header
        want = meta.data.get("bytes")
        if want != size:
            raise UserError(
                f"{side}: field 'data.bytes' = {want}, but {p.name} holds {size} data bytes "
                "(a publish cut short, or another file copied over it)"
            )
        if verify:
            name = data_hash_name(meta.data)
            _, digest = data_digest(p, header, name)
            if digest != meta.data.get(name):
                raise UserError(
                    f"{side}: field 'data.{name}' does not match {p.name}'s data "
                    "(the sidecar belongs to other data; convert or record the feed again)"
                )
    if check:
        from mm_sim.feeds.validate import check_crossed_book, check_events

        bad = [f for f in check_events(arr) if f.fatal]
        if not bad:
            crossed = check_crossed_book(arr, meta.instrument.tick_size)
            bad = [crossed] if crossed is not None and crossed.fatal else []
        if bad:
            raise UserError(
                f"{p}: cannot replay this feed: "
                + "; ".join(f.message() for f in bad)
                + " (`mm_sim inspect` lists every finding; docs/WHAT_HAPPENS_WHEN.md)"
            )
    return Feed(p, arr, meta)


def empty_events(n: int) -> np.ndarray:
    return np.zeros(n, dtype=EVENT_DTYPE)
