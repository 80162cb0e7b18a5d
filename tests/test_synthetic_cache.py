"""The synthetic day's disk cache: same bytes as generating, a new key for any input that
matters, and a damaged entry regenerated rather than used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mm_sim.config import LocalSettings
from mm_sim.feeds import synthetic_cache as C
from mm_sim.feeds.synthetic import SyntheticParams, generate

REPO = Path(__file__).resolve().parent.parent
DURATION = 20.0
PARAMS = SyntheticParams()


def _settings(root: Path, **kw: object) -> LocalSettings:
    return LocalSettings(synthetic_cache_dir=str(root), **kw)  # type: ignore[arg-type]


def _entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.fixture(scope="module")
def generated() -> np.ndarray:
    return generate(PARAMS, seed=3, duration_s=DURATION)[0]


def test_cold_and_warm_give_the_generated_bytes(tmp_path: Path, generated: np.ndarray) -> None:
    s = _settings(tmp_path)
    cold, inst = C.generate_cached(PARAMS, 3, DURATION, s)
    assert len(_entries(tmp_path)) == 2  # KEY.events + KEY.json
    warm, inst2 = C.generate_cached(PARAMS, 3, DURATION, s)
    assert cold.tobytes() == generated.tobytes() == warm.tobytes()
    assert warm.dtype == generated.dtype and warm.flags.writeable and warm.flags.c_contiguous
    assert inst == inst2
    warm[0]["price"] = -1.0  # copy-on-write: the stored day is not touched
    again, _ = C.generate_cached(PARAMS, 3, DURATION, s)
    assert again.tobytes() == generated.tobytes()


def test_every_input_is_in_the_key() -> None:
    base = C.cache_key(C.key_inputs(PARAMS, 3, DURATION))
    assert C.cache_key(C.key_inputs(PARAMS, 3, DURATION)) == base
    others = [
        C.key_inputs(PARAMS, 4, DURATION),
        C.key_inputs(PARAMS, 3, DURATION + 1e-9),
        C.key_inputs(PARAMS.model_copy(update={"fair_update_hz": 11.0}), 3, DURATION),
        {**C.key_inputs(PARAMS, 3, DURATION), "generator_version": -1},
        {**C.key_inputs(PARAMS, 3, DURATION), "generator_source_sha256": "0"},
    ]
    assert len({base, *(C.cache_key(o) for o in others)}) == len(others) + 1


def _damage_data(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit in the middle
    p.write_bytes(bytes(raw))


def _truncate_data(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-40])


@pytest.mark.parametrize(
    "damage",
    [
        ("events", _damage_data),
        ("events", _truncate_data),
        ("events", lambda p: p.unlink()),
        ("json", lambda p: p.write_text("{not json")),
        ("json", lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "count": 1}))),
        ("json", lambda p: p.write_text(json.dumps({"inputs": {}, "count": 0, "crc32": 0}))),
    ],
)
def test_a_damaged_entry_is_regenerated(
    tmp_path: Path, generated: np.ndarray, damage: tuple[str, object]
) -> None:
    s = _settings(tmp_path)
    C.generate_cached(PARAMS, 3, DURATION, s)
    suffix, fn = damage
    (target,) = tmp_path.glob(f"*.{suffix}")
    fn(target)  # type: ignore[operator]
    events, _ = C.generate_cached(PARAMS, 3, DURATION, s)
    assert events.tobytes() == generated.tobytes()
    # ... and the entry is whole again, so the next run reads it
    key = C.cache_key(C.key_inputs(PARAMS, 3, DURATION))
    assert _entries(tmp_path) == [f"{key}.events", f"{key}.json"]
    assert C._open(tmp_path, key, C.key_inputs(PARAMS, 3, DURATION)) is not None


def test_switched_off_writes_nothing(tmp_path: Path, generated: np.ndarray) -> None:
    events, _ = C.generate_cached(PARAMS, 3, DURATION, _settings(tmp_path, synthetic_cache=False))
    assert events.tobytes() == generated.tobytes()
    assert _entries(tmp_path) == []


def test_least_recently_used_days_are_evicted_beyond_the_cap(tmp_path: Path) -> None:
    s = _settings(tmp_path, synthetic_cache_max_mb=0.0)  # keeps only the day just used
    C.generate_cached(PARAMS, 3, 5.0, s)
    C.generate_cached(PARAMS, 4, 5.0, s)
    key = C.cache_key(C.key_inputs(PARAMS, 4, 5.0))
    assert _entries(tmp_path) == [f"{key}.events", f"{key}.json"]


def test_environment_names_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MM_SYNTHETIC_CACHE_DIR", str(tmp_path / "here"))
    monkeypatch.setenv("MM_SYNTHETIC_CACHE", "0")
    s = LocalSettings()
    assert C.cache_dir(s) is None
    monkeypatch.setenv("MM_SYNTHETIC_CACHE", "1")
    assert C.cache_dir(LocalSettings()) == tmp_path / "here"


def test_a_cache_that_cannot_be_changed_costs_a_regeneration_not_the_run(tmp_path: Path) -> None:
    """MM_SYNTHETIC_CACHE_DIR naming a file: removing the "invalid" entry failed with ENOTDIR
    and `inspect synthetic-short` (any synthetic command) ended with exit 1; so did a valid
    entry on a read-only cache (its mtime could not be touched)."""
    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("mine\n")
    env = {**os.environ, "MM_SYNTHETIC_CACHE_DIR": str(not_a_dir)}
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".venv" / "numba-cache"))
    r = subprocess.run(
        [sys.executable, "-m", "mm_sim", "inspect", "synthetic-short", "--json"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-1500:]
    assert json.loads(r.stdout)["events"] > 0
    assert "synthetic cache" in r.stderr  # said, as a warning
    assert not_a_dir.read_text() == "mine\n"
