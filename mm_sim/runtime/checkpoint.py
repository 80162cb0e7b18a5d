"""Per-iteration checkpoints so a killed soak resumes exactly where it committed.

A checkpoint is one ``.npz`` (engine arrays, plus a JSON blob for the tuner state, overrides
and decisions) written atomically *before* the iteration's line is appended to
``metrics.jsonl``. The line is the commit point: on resume the checkpoint of the last
committed iteration is loaded; a newer checkpoint left by a crash between the two writes is
ignored. Only the two most recent checkpoints are kept.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.errors import UserError
from mm_sim.events import atomic_write_bytes

KEEP = 2

# Arrays of more bytes than this are stored without their leading and trailing zero elements:
# a book is 2 MB a side (2**18 ticks) of which ~20 kB are levels, and each engine has two.
TRIM_BYTES = 65536
SPAN = "#span"  # suffix of a trimmed array's (first kept element, kept length, full length)


# Longest array a span may restore (2**30 elements: far beyond any book, short of exhausting
# memory on a garbled file).
MAX_ELEMENTS = 1 << 30


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint file, after checking each member's CRC: numpy reads only the
    elements a member's header announces, so a garbled file could otherwise load silently."""
    with np.load(path) as z:
        bad = z.zip.testzip()
        if bad is not None:
            raise ValueError(f"member {bad} fails its checksum")
        return {k: z[k] for k in z.files}


def write_npz(path: Path, arrays: dict[str, np.ndarray], *, compressed: bool) -> None:
    """``arrays`` as one .npz, written atomically (temp, fsync, rename)."""
    buf = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buf, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


def pack_state(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with every large 1-d one cut to its span of non-zero elements (bit for bit:
    -0.0 and NaN count as non-zero). Why: the soak writes each model arm's state at every
    iteration, and 8 MB of zeros, written and fsynced, were 4.5 % of a default soak."""
    out: dict[str, np.ndarray] = {}
    for k, a in arrays.items():
        if k.endswith(SPAN):
            raise ValueError(f"state key {k!r} ends with the suffix reserved for spans")
        if a.ndim != 1 or a.nbytes <= TRIM_BYTES or a.dtype.itemsize != 8 or a.dtype.hasobject:
            out[k] = a
            continue
        nz = np.flatnonzero(np.ascontiguousarray(a).view(np.uint64))
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
        out[k] = a[lo:hi]
        out[k + SPAN] = np.array([lo, hi - lo, len(a)], dtype=np.int64)
    return out


def unpack_state(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays ``pack_state`` was given (a file without spans is returned as it is)."""
    out: dict[str, np.ndarray] = {}
    for k, a in arrays.items():
        if k.endswith(SPAN):
            continue
        span = arrays.get(k + SPAN)
        if span is None:
            out[k] = a
            continue
        # The kept length is stored too: numpy reads a member's `shape` elements and no more,
        # so a shape edited shorter would otherwise come back zero-filled, without an error.
        if span.shape != (3,) or span.dtype != np.int64:
            raise ValueError(f"array {k!r}: span {span!r} is not (first, kept, length)")
        lo, kept, n = (int(v) for v in span)
        if kept != len(a) or not (0 <= lo <= n - kept) or n > MAX_ELEMENTS:
            raise ValueError(
                f"array {k!r}: {len(a)} elements at {lo} do not fit its span {kept}/{n}"
            )
        full = np.zeros(n, dtype=a.dtype)
        full[lo : lo + len(a)] = a
        out[k] = full
    return out


@dataclass
class Checkpoint:
    iteration: int
    engine: dict[str, np.ndarray]
    control: dict[str, np.ndarray] | None
    tuner: dict[str, Any]
    overrides: dict[str, float]
    decisions: list[dict[str, Any]]


def _path(directory: Path, iteration: int) -> Path:
    return directory / f"iteration-{iteration:05d}.npz"


def save_checkpoint(
    directory: Path,
    iteration: int,
    *,
    engine: dict[str, np.ndarray],
    control: dict[str, np.ndarray] | None,
    tuner: dict[str, Any],
    overrides: dict[str, float],
    decisions: list[dict[str, Any]],
) -> Path:
    arrays: dict[str, np.ndarray] = {f"engine/{k}": v for k, v in pack_state(engine).items()}
    if control is not None:
        arrays.update({f"control/{k}": v for k, v in pack_state(control).items()})
    meta = {"iteration": iteration, "tuner": tuner, "overrides": overrides, "decisions": decisions}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = _path(directory, iteration)
    write_npz(path, arrays, compressed=True)
    for old in sorted(directory.glob("iteration-*.npz"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(directory: Path, iteration: int) -> Checkpoint:
    path = _path(directory, iteration)
    if not path.exists():
        raise UserError(
            f"{path}: checkpoint of the last committed iteration is missing; cannot resume "
            "(start a fresh run in another --out directory)"
        )
    try:
        z = read_npz(path)
        meta = json.loads(bytes(z["meta"]).decode())
        engine = unpack_state(
            {k.split("/", 1)[1]: v for k, v in z.items() if k.startswith("engine/")}
        )
        control = unpack_state(
            {k.split("/", 1)[1]: v for k, v in z.items() if k.startswith("control/")}
        )
        ck = Checkpoint(
            iteration=int(meta["iteration"]),
            engine=engine,
            control=control or None,
            tuner=dict(meta["tuner"]),
            overrides=dict(meta["overrides"]),
            decisions=list(meta["decisions"]),
        )
    except Exception as exc:  # numpy's and zipfile's parsers raise a dozen kinds on bad bytes
        # Truncated, overwritten or hand-edited: resuming from it would continue another run.
        raise UserError(
            f"{path}: checkpoint is damaged ({type(exc).__name__}: {exc}); cannot resume "
            "(start a fresh run in another --out directory)"
        ) from None
    if ck.iteration != iteration:
        raise UserError(f"{path}: holds iteration {ck.iteration}, expected {iteration}")
    return ck
