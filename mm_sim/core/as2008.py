"""Avellaneda & Stoikov (2008) simulation study, run with this core's quoting functions.

The paper's experiment (section 4): a mid-price that moves +-sigma*sqrt(dt) with probability 1/2
per step, a dealer quoting one unit each side, fills arriving as Poisson with intensity
A*exp(-k*delta) at distance delta from the mid (probability A*exp(-k*delta)*dt per step), and
two strategies with the same total spread gamma*sigma^2*(T-t) + (2/gamma)*ln(1+gamma/k):

- inventory: quotes centred on the reservation price r = s - q*gamma*sigma^2*(T-t);
- symmetric: the same spread centred on the mid.

Both strategies see the same random numbers (same price path, same fill draws), so their
difference is the strategy alone. Profit is cash + q * S_T at T.

The reservation price and spread come from :mod:`mm_sim.core.quote` (the functions the
simulator's strategy uses), so this study validates them in the paper's own units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.quote import as_total_spread, reservation_price
from mm_sim.core.rng import make_rng, rng_uniform

# Kernels never allocate, so they are compiled without numba's reference counting: passing
# state arrays between kernels then costs nothing (docs/CORE.md, "Speed").
JIT: dict[str, Any] = {"cache": True, "_nrt": False}

# Results per path: columns of the output array
R_INV_PROFIT = 0
R_INV_Q = 1
R_SYM_PROFIT = 2
R_SYM_Q = 3
R_SIZE = 4

GAMMAS = (0.1, 0.01, 0.5)
STRATEGIES = ("inventory", "symmetric")


@dataclass(frozen=True)
class StudyParams:
    """The paper's settings."""

    s0: float = 100.0
    sigma: float = 2.0
    T: float = 1.0
    dt: float = 0.005
    A: float = 140.0
    k: float = 1.5


@njit(**JIT)
def simulate_paths(
    out: np.ndarray,
    state: np.ndarray,
    gamma: float,
    s0: float,
    sigma: float,
    T: float,
    dt: float,
    A: float,
    k: float,
) -> None:
    """Fill ``out[path]`` with (inventory profit, q, symmetric profit, q) for each path."""
    n_steps = round(T / dt)
    jump = sigma * np.sqrt(dt)
    for path in range(out.shape[0]):
        s = s0
        qi = 0.0
        xi = 0.0
        qs = 0.0
        xs = 0.0
        for step in range(n_steps):
            tau = T - step * dt
            half = as_total_spread(gamma, sigma, tau, k) / 2.0
            r = reservation_price(s, qi, gamma, sigma, tau)
            u_bid = rng_uniform(state)
            u_ask = rng_uniform(state)
            # inventory strategy: quotes around r
            bid = r - half
            ask = r + half
            if u_bid < A * np.exp(-k * (s - bid)) * dt:
                qi += 1.0
                xi -= bid
            if u_ask < A * np.exp(-k * (ask - s)) * dt:
                qi -= 1.0
                xi += ask
            # symmetric strategy: the same spread around the mid
            if u_bid < A * np.exp(-k * half) * dt:
                qs += 1.0
                xs -= s - half
            if u_ask < A * np.exp(-k * half) * dt:
                qs -= 1.0
                xs += s + half
            if rng_uniform(state) < 0.5:
                s += jump
            else:
                s -= jump
        out[path, R_INV_PROFIT] = xi + qi * s
        out[path, R_INV_Q] = qi
        out[path, R_SYM_PROFIT] = xs + qs * s
        out[path, R_SYM_Q] = qs


def mean_spread(gamma: float, p: StudyParams) -> float:
    """Time-average of the total spread over the session (the same for both strategies)."""
    n = round(p.T / p.dt)
    return float(np.mean([as_total_spread(gamma, p.sigma, p.T - i * p.dt, p.k) for i in range(n)]))


def run_study(
    paths: int = 1000, seed: int = 2008, params: StudyParams | None = None
) -> list[dict[str, Any]]:
    """One row per (gamma, strategy): mean/std of profit and of final inventory."""
    p = params or StudyParams()
    rows: list[dict[str, Any]] = []
    for i, gamma in enumerate(GAMMAS):
        out = np.zeros((paths, R_SIZE))
        state = make_rng(seed * 1000 + i)
        simulate_paths(out, state, gamma, p.s0, p.sigma, p.T, p.dt, p.A, p.k)
        for strategy, (cp, cq) in zip(
            STRATEGIES, ((R_INV_PROFIT, R_INV_Q), (R_SYM_PROFIT, R_SYM_Q)), strict=True
        ):
            rows.append(
                {
                    "gamma": gamma,
                    "strategy": strategy,
                    "profit_mean": float(out[:, cp].mean()),
                    "profit_std": float(out[:, cp].std(ddof=1)) if paths > 1 else 0.0,
                    "q_mean": float(out[:, cq].mean()),
                    "q_std": float(out[:, cq].std(ddof=1)) if paths > 1 else 0.0,
                    "spread_mean": mean_spread(gamma, p),
                    "paths": paths,
                }
            )
    return rows


# The paper's table could not be read from a primary source while writing this module (the
# published text was not reachable; secondary write-ups quote different numbers), so no paper
# value is printed as if it were checked. Fill this in only from the paper itself.
PAPER_VALUES: dict[tuple[float, str], dict[str, float]] = {}
UNVERIFIED = "paper value unverified"


def simulate_paths_py(
    paths: int, seed: int, gamma: float, p: StudyParams
) -> list[tuple[float, float, float, float]]:
    """Plain-Python reference of :func:`simulate_paths` (same draws, same arithmetic)."""
    from mm_sim.core.reference_parts import RefRng

    rng = RefRng(seed)
    n_steps = round(p.T / p.dt)
    jump = p.sigma * math.sqrt(p.dt)
    res = []
    for _ in range(paths):
        s, qi, xi, qs, xs = p.s0, 0.0, 0.0, 0.0, 0.0
        for step in range(n_steps):
            tau = p.T - step * p.dt
            if gamma <= 0.0:
                spread = 2.0 / p.k
            else:
                spread = gamma * p.sigma * p.sigma * tau + (2.0 / gamma) * math.log(
                    1.0 + gamma / p.k
                )
            half = spread / 2.0
            r = s - qi * gamma * p.sigma * p.sigma * tau
            u_bid, u_ask = rng.uniform(), rng.uniform()
            bid, ask = r - half, r + half
            if u_bid < p.A * math.exp(-p.k * (s - bid)) * p.dt:
                qi, xi = qi + 1.0, xi - bid
            if u_ask < p.A * math.exp(-p.k * (ask - s)) * p.dt:
                qi, xi = qi - 1.0, xi + ask
            if u_bid < p.A * math.exp(-p.k * half) * p.dt:
                qs, xs = qs + 1.0, xs - (s - half)
            if u_ask < p.A * math.exp(-p.k * half) * p.dt:
                qs, xs = qs - 1.0, xs + (s + half)
            s = s + jump if rng.uniform() < 0.5 else s - jump
        res.append((xi + qi * s, qi, xs + qs * s, qs))
    return res


kernel_cache.bind(__name__, kernel_cache.CORE)
