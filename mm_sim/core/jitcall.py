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


def entry_point(kernel: Any, *args: Any) -> Callable[..., Any]:
    """The compiled function of ``kernel`` (a numba dispatcher) for the types of ``args``,
    compiled (or loaded from the cache) first if needed."""
    sig = tuple(kernel.typeof_pyval(a) for a in args)
    cres = kernel.overloads.get(sig)
    if cres is None:
        kernel.compile(sig)
        cres = kernel.overloads[sig]
    fn: Callable[..., Any] = cres.entry_point
    return fn
