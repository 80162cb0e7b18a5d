"""`make setup` compiles the soak's kernels beside the install (mm_sim/kernel_warmup.py): the
packages it installs first are enough to run it, and a soak after it compiles nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from mm_sim import kernel_warmup

REPO = Path(__file__).resolve().parent.parent


_dist = kernel_warmup.requirement_name


def test_requirements_come_from_pyproject(tmp_path: Path) -> None:
    reqs = kernel_warmup.kernel_requirements()
    assert [_dist(r) for r in reqs] == list(kernel_warmup.KERNEL_DEPS)
    project = (REPO / "pyproject.toml").read_text()
    for r in reqs:
        assert f'"{r}"' in project  # the very string, not a copy that could drift
    broken = tmp_path / "pyproject.toml"
    broken.write_text(project.replace('"xxhash', '"not-xxhash'))
    with pytest.raises(SystemExit, match="no dependency named xxhash"):
        kernel_warmup.kernel_requirements(broken)
    broken.write_text(project.replace('"xxhash>=3.4",', '"xxhash>=3.4", "XXHash>=3.5",'))
    with pytest.raises(SystemExit, match="xxhash is listed twice"):
        kernel_warmup.kernel_requirements(broken)
    assert _dist("Pydantic_Settings.Extra >= 2; python_version > '3'") == "pydantic-settings-extra"
    assert _dist("numba @ https://example.invalid/numba.whl") == "numba"


def test_a_run_by_hand_finds_the_kernels_make_compiled(tmp_path: Path) -> None:
    """Without NUMBA_CACHE_DIR, the venv's Python caches kernels where `make` does."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    code = "import mm_sim, numba, sys; print(numba.config.CACHE_DIR); print(sys.prefix)"
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    cache, prefix = run.stdout.split()
    if sys.prefix == sys.base_prefix:
        assert cache != str(Path(prefix) / "numba-cache")  # numba's own default stays
    else:
        assert cache == str(Path(prefix) / "numba-cache")


def _closure(names: tuple[str, ...]) -> set[str]:
    """The installed distributions these need, transitively (what pip installs with them)."""
    seen: set[str] = set()
    todo = [n.lower().replace("_", "-") for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r:
                continue
            todo.append(_dist(r))
    return seen


# The warm-up in an interpreter that behaves as if only the given distributions were installed:
# an import of anything else fails as it would on a machine where `make setup` has not got to it
# yet (optional imports such as numba's of PyYAML then fall back, as they would there).
_PHASE_ONE = """
import importlib.abc, sys
from importlib import metadata
allowed = set(sys.argv[1].split())
dists = metadata.packages_distributions()
blocked = set()
class NotYetInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        ds = dists.get(top)
        if top == "mm_sim" or not ds or any(d.lower().replace("_", "-") in allowed for d in ds):
            return None
        blocked.add(top)
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NotYetInstalled())
from mm_sim import kernel_warmup
kernel_warmup.warm(1.0)
print("blocked:", " ".join(sorted(blocked)))
"""


@pytest.mark.slow
def test_warm_up_needs_only_what_setup_installs_first_and_covers_a_soak(tmp_path: Path) -> None:
    """Cold cache: the warm-up runs with nothing installed but KERNEL_DEPS and what they pull
    in; then a whole soak (primary, model arms, reports) on the same cache compiles nothing."""
    cache = tmp_path / "numba"
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": str(cache),
        "MM_SYNTHETIC_CACHE_DIR": str(tmp_path / "synthetic"),
        "MM_MODEL_ARMS_PROCESS": "never",
    }
    allowed = " ".join(sorted(_closure(kernel_warmup.KERNEL_DEPS)))
    run = subprocess.run(
        [sys.executable, "-c", _PHASE_ONE, allowed], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, f"the warm-up needs more than KERNEL_DEPS: {run.stderr[-3000:]}"

    def kernels() -> dict[str, int]:
        return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*.nbc")}

    before = kernels()
    assert len(before) > 40
    soak = subprocess.run(
        [sys.executable, "-m", "mm_sim", "soak", "-o", str(tmp_path / "run"), "--iterations",
         "1", "--iteration-minutes", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert soak.returncode == 0, soak.stderr[-3000:]
    after = kernels()
    assert after == before, f"the soak compiled {sorted(set(after) - set(before))}"
