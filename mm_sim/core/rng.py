"""A seedable random stream for numba kernels whose whole state is one small uint64 array.

Why not ``np.random`` inside the kernels: numba's global generator state is per process and
invisible to a checkpoint. Keeping the state in an array the caller owns makes every draw part of
the checkpointed state, so a restored run continues the exact same stream.

Generator: xoshiro256** (Blackman & Vigna), seeded through splitmix64 so that nearby seeds give
unrelated streams. Uniforms use the top 53 bits, so they lie in [0, 1) on the double grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache

# Kernels never allocate, so they are compiled without numba's reference counting: passing
# state arrays between kernels then costs nothing (docs/CORE.md, "Speed").
JIT: dict[str, Any] = {"cache": True, "_nrt": False}

RNG_SIZE = 4

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(inline="always", **JIT)
def _rotl(x: np.uint64, k: int) -> np.uint64:
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(**JIT)
def rng_seed(state: np.ndarray, seed: int) -> None:
    """Fill the four state words from ``seed`` with splitmix64 (never all zero)."""
    x = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    for i in range(RNG_SIZE):
        x = x + _GOLDEN
        z = x
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        state[i] = z ^ (z >> np.uint64(31))


@njit(**JIT)
def rng_next(state: np.ndarray) -> np.uint64:
    """Next 64-bit output; advances the state in place."""
    s0 = state[0]
    s1 = state[1]
    s2 = state[2]
    s3 = state[3]
    result = _rotl(s1 * np.uint64(5), 7) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    state[0] = s0
    state[1] = s1
    state[2] = s2
    state[3] = s3
    return result


@njit(**JIT)
def rng_uniform(state: np.ndarray) -> float:
    """Uniform double in [0, 1)."""
    return float(rng_next(state) >> np.uint64(11)) * _U53


def make_rng(seed: int) -> np.ndarray:
    state = np.zeros(RNG_SIZE, dtype=np.uint64)
    rng_seed(state, int(seed))
    return state


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
