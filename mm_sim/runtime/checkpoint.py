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
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.errors import UserError
from mm_sim.events import atomic_write_bytes

KEEP = 2


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
    arrays: dict[str, np.ndarray] = {f"engine/{k}": v for k, v in engine.items()}
    if control is not None:
        arrays.update({f"control/{k}": v for k, v in control.items()})
    meta = {"iteration": iteration, "tuner": tuner, "overrides": overrides, "decisions": decisions}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    path = _path(directory, iteration)
    atomic_write_bytes(path, buf.getvalue())
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
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            engine = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("engine/")}
            control = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("control/")}
        ck = Checkpoint(
            iteration=int(meta["iteration"]),
            engine=engine,
            control=control or None,
            tuner=dict(meta["tuner"]),
            overrides=dict(meta["overrides"]),
            decisions=list(meta["decisions"]),
        )
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        # Truncated, overwritten or hand-edited: resuming from it would continue another run.
        raise UserError(
            f"{path}: checkpoint is damaged ({type(exc).__name__}: {exc}); cannot resume "
            "(start a fresh run in another --out directory)"
        ) from None
    if ck.iteration != iteration:
        raise UserError(f"{path}: holds iteration {ck.iteration}, expected {iteration}")
    return ck
