"""Compile the kernels a soak runs into numba's cache before the first run has to.

Why: on a fresh clone the first soak spent ~19 s compiling the replay kernel and the synthetic
market's generator before its first event (benchmarks/README.md, "First run"), on one core.
`make setup` installs the few packages the kernels need first (``KERNEL_DEPS``), then runs this
beside pip's install of everything else (pandas, pyarrow, matplotlib, Dask, the dev tools: most
of the install, and one core's work), so the first `make soak` and the test suite find the
kernels compiled. It runs the real generator and engine on a few seconds of the default market,
so what it compiles is what a soak asks for (``tests/test_kernel_warmup.py``: a soak after it
compiles nothing).

    python -m mm_sim.kernel_warmup           # compile (needs only KERNEL_DEPS installed)
    python -m mm_sim.kernel_warmup --deps    # KERNEL_DEPS' requirements from pyproject.toml,
                                             # one per line (pip install -r)

Only the standard library is imported at the top: ``--deps`` runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
import time
import tomllib
from pathlib import Path

# The distributions that mm_sim.core and the synthetic generator import (and nothing else).
KERNEL_DEPS = ("numpy", "numba", "pydantic", "pydantic-settings", "xxhash", "structlog")

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirement_name(req: str) -> str:
    """The distribution a requirement string names, normalised as pip compares names (PEP 503:
    case, and runs of ``-``, ``_`` and ``.``, do not matter)."""
    name = re.split(r"[\s<>=!~;\[(@]", req.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def kernel_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """The project's own requirement strings for ``KERNEL_DEPS`` (one source of truth: the
    versions pip installs first are the ones the full install keeps)."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    found = {}
    for req in deps:
        name = requirement_name(req)
        if name in KERNEL_DEPS:
            if name in found:
                raise SystemExit(f"{pyproject}: {name} is listed twice; the warm-up takes one")
            found[name] = req
    missing = [d for d in KERNEL_DEPS if d not in found]
    if missing:
        raise SystemExit(f"{pyproject}: no dependency named {', '.join(missing)}")
    return [found[d] for d in KERNEL_DEPS]


def warm(seconds: float = 5.0) -> float:
    """Generate ``seconds`` of the default synthetic market and run the default profile's
    engine over it in two slices (a held one, then the flushed end: both paths of a soak's
    chunks); returns the wall time taken."""
    t0 = time.perf_counter()
    from mm_sim.config import Overrides, load_profile
    from mm_sim.core.engine import Engine
    from mm_sim.feeds.synthetic import SyntheticParams, generate

    events, instrument = generate(SyntheticParams(), seed=1, duration_s=seconds)
    engine = Engine(load_profile("S1"), Overrides(), instrument, 1)
    half = len(events) // 2
    engine.run(events[:half], flush=False)
    engine.run(events[half:], flush=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--deps"]:
        print("\n".join(kernel_requirements()))  # a requirements file: one per line
        return 0
    if args:
        print("usage: python -m mm_sim.kernel_warmup [--deps]", file=sys.stderr)
        return 2
    print(f"kernels compiled into numba's cache in {warm():.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
