"""JSON-safe copies of result dicts, shared by the bench (``run.py``) and the peer (``peer.py``).

Why: results hold numpy scalars and NaN/inf figures (a ratio with nothing to divide by);
``json`` writes NaN as a bare token other parsers refuse, so they become null.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def clean(x: Any) -> Any:
    """``x`` with numpy scalars as Python numbers, NaN/inf as None, tuples as lists."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
