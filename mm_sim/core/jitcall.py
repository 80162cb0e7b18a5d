"""A numba kernel's compiled entry point, for calls too small to pay for the dispatcher.

Why: a dispatcher call types every argument and looks the signature up, every time. For
``run_chunk`` and its ~28 arrays (in four tuples) that is ~2 µs (measured), more than the
kernel spends on one live trade. The compiled overload's entry point takes the arguments as
they are: ~0.6 µs.

It trusts them, though: an array of another dtype, layout or writability than the one it was
made for would be read as if it were that one. So it is only used where the caller checks the
few properties that vary (see ``Engine.run_live``) and the other arguments are the very arrays
the entry point was made with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# Entry points made, by kernel and the arguments' kinds: numba's typing of run_chunk's ~28
# arrays from Python (``typeof_pyval``) takes 0.5-0.75 ms, which every fresh engine paid on its
# first call (a 2,000-event feed ran 4x slower).
_MADE: dict[tuple[Any, Any], Callable[..., Any]] = {}


def _kind(x: Any) -> Any:
    """What numba's type of ``x`` depends on (for arrays: dtype, dimensions, layout, writability,
    alignment), cheap to compute; anything else by its Python type."""
    if isinstance(x, np.ndarray):
        f = x.flags
        return (
            x.dtype, x.dtype.isalignedstruct, x.ndim, f.c_contiguous, f.f_contiguous,
            f.writeable, f.aligned,
        )  # fmt: skip
    if isinstance(x, tuple):  # (a named tuple is typed apart from a plain one)
        return type(x), tuple(_kind(v) for v in x)
    if type(x) is int:  # int64, or uint64 beyond it
        return int, -(1 << 63) <= x < (1 << 63)
    return type(x)


def entry_point(kernel: Any, *args: Any) -> Callable[..., Any]:
    """The compiled function of ``kernel`` (a numba dispatcher) for the types of ``args``,
    compiled (or loaded from the cache) first if needed."""
    key = (kernel, _kind(args))
    fn = _MADE.get(key)
    if fn is None:
        sig = tuple(kernel.typeof_pyval(a) for a in args)
        cres = kernel.overloads.get(sig)
        if cres is None:
            kernel.compile(sig)
            cres = kernel.overloads[sig]
        fn = _MADE[key] = cres.entry_point
    return fn
