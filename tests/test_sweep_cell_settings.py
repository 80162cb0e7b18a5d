"""A sweep cell's run settings (sweep/cell.py). With the tuner off, a run cut into one chunk
per iteration (SoakConfig.chunk_ns), without checkpoints (SoakConfig.checkpoints), with its
reports built once at the end (SoakConfig.interim_reports) and without fills.csv
(SoakConfig.fills_csv) writes the same records and reports as the soak's defaults (2 s chunks,
checkpoints, reports after every iteration). With the tuner on, the chunk is where the
emergency rule acts, so the soak keeps its default."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from mm_sim.config import Overrides, RunSettings, load_profile
from mm_sim.feeds.spec import load_events, resolve_feed
from mm_sim.runtime.replay import CHUNK_NS, plan_iterations
from mm_sim.runtime.soak import Soak
from mm_sim.runtime.soak_config import SoakConfig

ITERATIONS, MINUTES = 2, 3.0


def _run(root: Path, **kw: int | bool) -> Path:
    spec = resolve_feed("synthetic")
    events, instrument, identity = load_events(spec, 3)
    prof = load_profile("S1")
    plan = plan_iterations(events, ITERATIONS, int(MINUTES * 60e9))
    settings = RunSettings(
        profile=prof.name, overrides=None, feed="synthetic", iterations=ITERATIONS,
        iteration_minutes=MINUTES, seed=3, artifacts=str(root), speed=None,
    )  # fmt: skip
    cfg = SoakConfig(
        settings=settings, profile=prof, overrides=Overrides(), feed_identity=identity,
        instrument=prof.instrument_for(instrument), events=events, plan=plan, artifacts=root,
        tune=False, model_arms=("crossing_fills",), charts=False, **kw,
    )  # fmt: skip
    asyncio.run(Soak(cfg, out=io.StringIO()).run())
    return root


def _is_checkpoint(f: Path) -> bool:
    return "checkpoint" in f.name or "checkpoints" in f.parts


def test_one_chunk_per_iteration_without_checkpoints_writes_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MM_MODEL_ARMS_PROCESS", "never")
    a = _run(tmp_path / "a")
    b = _run(
        tmp_path / "b",
        chunk_ns=int(MINUTES * 60e9),
        chunk_events=1 << 20,
        checkpoints=False,
        interim_reports=False,
        fills_csv=False,
    )
    every = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert any(_is_checkpoint(f) for f in every)  # the default run has them (arm's too)
    files = [f for f in every if not _is_checkpoint(f)]
    assert any(f.name == "EDGE_REPORT.json" for f in files)
    assert any(f.suffix == ".bin" for f in files)  # the raw records are compared too
    # the cell's run has exactly the other files: no checkpoint of the primary or the arm, no
    # fills.csv (a cell drops it with its records)
    assert Path("soak/fills.csv") in files
    rest = [f for f in files if f != Path("soak/fills.csv")]
    assert sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) == rest
    differ = [
        str(f)
        for f in rest
        if f.name != "run.json" and (a / f).read_bytes() != (b / f).read_bytes()
    ]
    assert differ == []


def test_the_default_chunk_is_two_seconds() -> None:
    assert SoakConfig.__dataclass_fields__["chunk_ns"].default == CHUNK_NS == 2_000_000_000
