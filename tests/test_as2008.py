"""``mm_sim validate as2008``: the paper's qualitative result, determinism, kernel = reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mm_sim.core.as2008 import StudyParams, simulate_paths, simulate_paths_py
from mm_sim.core.reference_parts import RefRng
from mm_sim.core.rng import make_rng, rng_next, rng_uniform

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mm_sim", "validate", "as2008", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("as2008") / "rows.json"
    proc = run_cli("--paths", "400", "--seed", "7", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "paper value unverified" in proc.stdout
    return json.loads(out.read_text())


def test_inventory_strategy_has_less_risk_than_symmetric(study: dict) -> None:
    rows = {(r["gamma"], r["strategy"]): r for r in study["rows"]}
    assert {g for g, _ in rows} == {0.1, 0.01, 0.5}
    for gamma in (0.1, 0.01, 0.5):
        inv, sym = rows[(gamma, "inventory")], rows[(gamma, "symmetric")]
        assert set(inv) >= {"gamma", "strategy", "profit_mean", "profit_std", "q_mean", "q_std"}
        assert inv["profit_std"] < sym["profit_std"]
        assert inv["q_std"] < 0.75 * sym["q_std"]
        # both strategies earn the spread on average; the inventory one gives some of it up
        assert 0 < inv["profit_mean"] < sym["profit_mean"] + 3 * sym["profit_std"] / 20
        assert abs(inv["q_mean"]) < 3 * inv["q_std"] / 20 + 0.2
    # more risk aversion: tighter inventory
    assert rows[(0.5, "inventory")]["q_std"] < rows[(0.01, "inventory")]["q_std"]


def test_same_seed_same_numbers_other_seed_other_numbers(study: dict, tmp_path: Path) -> None:
    # --out PATH writes the file (the fixture used its older spelling, --json PATH) ...
    again = tmp_path / "again.json"
    assert run_cli("--paths", "400", "--seed", "7", "--out", str(again)).returncode == 0
    assert json.loads(again.read_text())["rows"] == study["rows"]
    # ... and --json alone prints the same object, as every command's --json does
    other = run_cli("--paths", "400", "--seed", "8", "--json")
    assert other.returncode == 0
    assert json.loads(other.stdout)["rows"] != study["rows"]


def test_bad_arguments_are_user_errors() -> None:
    proc = run_cli("--paths", "1")
    assert proc.returncode == 2 and "at least 2 paths" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--paths", "100000000000"], "--paths = 100000000000: at most 10,000,000 paths"),
        (["--seed", "18446744073709552"], "expected 0 <= seed <= 18446744073709551"),
        (["--seed", str(2**64)], "expected 0 <= seed <= 18446744073709551"),
    ],
)
def test_a_seed_or_path_count_the_study_cannot_run_is_refused(args: list[str], needle: str) -> None:
    """A seed whose generator seeds (seed x 1000 + gamma index) pass 2**64 failed in the compiled
    kernel, and 1e11 paths asked numpy for 2.9 TiB: both internal errors (exit 70)."""
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr[-800:]
    assert needle in proc.stderr and "internal error" not in proc.stderr


def test_kernel_matches_the_python_reference() -> None:
    p = StudyParams()
    for gamma in (0.1, 0.5):
        out = np.zeros((5, 4))
        simulate_paths(out, make_rng(11), gamma, p.s0, p.sigma, p.T, p.dt, p.A, p.k)
        ref = np.array(simulate_paths_py(5, 11, gamma, p))
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9)
        assert np.abs(out[:, 1]).sum() > 0  # something happened


def test_rng_matches_its_reference_and_is_uniform() -> None:
    state = make_rng(123)
    ref = RefRng(123)
    assert [int(rng_next(state)) for _ in range(50)] == [ref.next() for _ in range(50)]
    u = np.array([rng_uniform(state) for _ in range(20000)])
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    assert not np.array_equal(make_rng(1), make_rng(2))
