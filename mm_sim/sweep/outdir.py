"""A sweep's output directory: claimed and locked for one sweep, checked on ``--resume``
against the settings it was swept with, and cleaned of what a killed run left."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import IO, Any

from mm_sim.config import Overrides, Profile, RunSettings, read_json_file
from mm_sim.errors import UserError
from mm_sim.events import atomic_write_json, hold_lock, sidecar_path
from mm_sim.sweep.grid import Grid
from mm_sim.sweep.report import BEST_CELL, BEST_PROFILE, HEATMAP, REPORT
from mm_sim.sweep.results import FILE as RESULTS_FILE

META = "sweep.json"
LOCK = ".lock"
# What a sweep keeps at the top of its directory (docs/SWEEP.md, "Output"); hidden files (its
# own temp files, a desktop's) do not make a folder someone else's either
_OWN = frozenset(
    (META, LOCK, RESULTS_FILE, REPORT, HEATMAP, BEST_CELL, BEST_PROFILE, "feeds", "runs")
)


def sweep_meta(
    settings: RunSettings, profile: Profile, overrides: Overrides, grid: Grid
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "grid": str(grid.path),
        "grid_keys": list(grid.keys),
        "iterations": settings.iterations,
        "iteration_minutes": settings.iteration_minutes,
        "profile": profile.model_dump(mode="json"),
        "overrides": overrides.as_dict(),
        "clock": settings.clock,
    }


_MUST_MATCH = ("iterations", "iteration_minutes", "profile", "overrides", "grid_keys", "clock")


def _lock(out: Path) -> IO[bytes]:
    """Hold ``DIR/.lock`` for the sweep: a second run or resume on one directory would redo
    (and race on) the same cells."""
    return hold_lock(
        out / LOCK,
        f"{out}/: another sweep is running in this directory (it holds {out / LOCK}); "
        "wait for it to end, or use another --out",
    )


def prepare(out: Path, meta: dict[str, Any], resume: bool) -> IO[bytes]:
    """Check and claim the output directory; the lock to hold until the sweep ends."""
    meta_path = out / META
    csv_path = out / RESULTS_FILE
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file, not a directory; give a (new or sweep) directory")
    if resume and not meta_path.is_file():
        raise UserError(
            f"--resume: no sweep to resume in {out}/ ({meta_path} not found); run without "
            "--resume to start one"
        )
    foreign = (
        sorted(p.name for p in out.iterdir() if p.name not in _OWN and not p.name.startswith("."))
        if out.is_dir()
        else []
    )
    if not resume and foreign and not meta_path.is_file():
        # Not a sweep's directory (no sweep.json) and holding other files: someone's folder.
        # A sweep writes its files here and prunes feeds/, so it is not the place.
        raise UserError(
            f"--out {out}: a directory with other files ({', '.join(foreign[:3])}) and no sweep "
            "in it; give a new or empty directory (or a sweep's, with --resume)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the directory ({exc.strerror})") from None
    lock = _lock(out)
    try:
        if not resume:
            # A sweep that committed nothing (e.g. no cluster reachable) may simply be started
            # again.
            if csv_path.exists() and csv_path.read_bytes().count(b"\n") > 1:
                raise UserError(
                    f"{out}/ already holds a sweep: pass --resume to continue it, or use a new "
                    "--out"
                )
            csv_path.unlink(missing_ok=True)
        else:
            # Read as every settings file is (UTF-8, one JSON object): a damaged sweep.json
            # (not UTF-8, a list) was an internal error.
            old = read_json_file(meta_path, "sweep record (sweep.json)")
            diff = [k for k in _MUST_MATCH if old.get(k) != meta.get(k)]
            if diff:
                raise UserError(
                    f"--resume: {out}/ was swept with other {', '.join(diff)} than now "
                    f"(see {meta_path}); its results would not be comparable: use a new --out"
                )
        atomic_write_json(meta_path, meta)
    except BaseException:
        lock.close()
        raise
    return lock


def remove_attempts(out: Path) -> None:
    """Delete the run directories of attempts that never finished (``runs/<cell>/.<feed>.*.tmp``).

    Under the directory's lock no other sweep writes here, so every such directory is left by
    a killed worker or driver; its cell has no row and runs again.
    """
    for tmp in (out / "runs").glob("*/.*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def prune_feeds(out: Path, keep: set[Path]) -> None:
    """Delete the generated days in ``DIR/feeds/`` except ``keep`` (and their sidecars)."""
    cache = out / "feeds"
    if not cache.is_dir():
        return
    names = {p.name for p in keep} | {sidecar_path(p).name for p in keep}
    for entry in cache.iterdir():
        if entry.name not in names:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        cache.rmdir()  # only when empty
