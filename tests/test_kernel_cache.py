"""Every compiled kernel's disk cache is bound to all the sources of its group.

numba keys a kernel's cache entry on its own file; a kernel that compiles in another module's
kernels or constants would otherwise keep stale code after an upgrade that changed only that
module (mm_sim/kernel_cache.py). Here: every cached kernel in mm_sim carries its group's stamp,
every file a group names exists, and an edit to any one of them changes the group's digest.
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mm_sim
from mm_sim import kernel_cache


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(mm_sim.__path__, "mm_sim."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def test_every_cached_kernel_is_bound_to_its_group() -> None:
    """After importing everything (each kernel module binds itself when imported)."""
    mods = {name: importlib.import_module(name) for name in _modules()}
    unbound: list[str] = []
    seen = 0
    for name, mod in mods.items():
        for attr, obj in vars(mod).items():
            cfile = getattr(getattr(obj, "_cache", None), "_cache_file", None)
            stamp = getattr(cfile, "_source_stamp", None)
            if stamp is None or getattr(obj.py_func, "__module__", None) != name:
                continue
            seen += 1
            tags = {"mm_sim-core", "mm_sim-binance"}
            if not (isinstance(stamp, tuple) and len(stamp) == 3 and stamp[1] in tags):
                unbound.append(f"{name}.{attr}")
    assert seen > 100  # the walk found the kernels
    assert not unbound, f"kernels whose disk cache ignores their group's sources: {unbound}"


_ALONE = """
import importlib, sys
importlib.import_module(sys.argv[1])
bad = []
for name, mod in list(sys.modules.items()):
    if not name.startswith("mm_sim"):
        continue
    for attr, obj in vars(mod).items():
        cfile = getattr(getattr(obj, "_cache", None), "_cache_file", None)
        stamp = getattr(cfile, "_source_stamp", None)
        if stamp is None or getattr(obj.py_func, "__module__", None) != name:
            continue
        if not (isinstance(stamp, tuple) and len(stamp) == 3):
            bad.append(name + "." + attr)
print(" ".join(bad))
"""


def _kernel_modules() -> list[str]:
    root = Path(kernel_cache.__file__).parent
    out = []
    for name in _modules():
        rel = Path(*name.split(".")[1:])
        path = root / rel.with_suffix(".py")
        if path.exists() and "@njit" in path.read_text():
            out.append(name)
    return out


def test_each_kernel_module_alone_loads_only_bound_kernels() -> None:
    """A process that imports one kernel module (``mm_sim validate`` imports as2008 alone) finds
    every kernel it pulled in bound: a helper bound only by an importer it does not load would
    have its stale cache entry linked into a fresh compile."""
    mods = _kernel_modules()
    assert len(mods) > 15
    for name in mods:
        r = subprocess.run(
            [sys.executable, "-c", _ALONE, name], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip() == "", f"importing {name} alone leaves unbound: {r.stdout}"


@pytest.mark.parametrize("group", [kernel_cache.CORE, kernel_cache.BINANCE])
def test_an_edit_to_any_source_of_a_group_changes_its_digest(
    group: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(kernel_cache.__file__).parent
    for rel in group:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / rel, tmp_path / rel)
    monkeypatch.setattr(kernel_cache, "_ROOT", tmp_path)
    kernel_cache.digest.cache_clear()
    try:
        base = kernel_cache.digest(group)
        assert base == _fresh(group, root)
        for rel in group:
            p = tmp_path / rel
            text = p.read_bytes()
            p.write_bytes(text + b"\n# edited\n")
            kernel_cache.digest.cache_clear()
            assert kernel_cache.digest(group) != base, rel
            p.write_bytes(text)
    finally:
        kernel_cache.digest.cache_clear()


def _fresh(group: tuple[str, ...], root: Path) -> str:
    kernel_cache.digest.cache_clear()
    old = kernel_cache._ROOT
    kernel_cache._ROOT = root
    try:
        return kernel_cache.digest(group)
    finally:
        kernel_cache._ROOT = old
        kernel_cache.digest.cache_clear()
