"""Driver-aware tuning of the runtime overrides: the seed's scenarios A–D plus guardrails.

Pure and synchronous: ``Tuner.after_iteration`` and ``Tuner.emergency`` take metrics and return
decisions; the soak task applies them. Keeping the policy free of I/O makes every rule testable
on hand-written metrics and makes a resumed soak take the same decisions (the tuner's state is
a plain dict saved with each checkpoint).

Scenarios (the seed's names; thresholds in ``TunerPolicy``):

- A, slippage dominant: ``slippage_bps`` is among the negative-edge drivers →
  widen ``base_spread_bps_delta`` by +0.02..+0.05 and raise ``tail_age_ms`` by +50..+100.
- B, adverse dominant: adverse cost p95 > 4.0 bps → lower ``impact_cap_ratio`` and
  ``max_delta_ratio`` by 0.02..0.04.
- C, age relief: order-age p95 > 330 ms while execution is healthy (net ≥ 0, no A/B trigger,
  no block reason above its ratio limit) → ``min_interval_ms`` −10..−20, ``replace_rate_per_min``
  +30..+60.
- D, fallback: net_bps < 0 for two iterations in a row → the conservative package: spread
  +0.05..+0.10, ``min_interval_ms`` +20..+40, ``replace_rate_per_min`` −40..−80.

Each step is ``lo + (hi - lo) * m`` with ``m`` in [0, 1] measuring how far the driver is past its
threshold (``TunerPolicy.*_scale`` is the distance at which the full step is used).

Guardrails: a field changes at most ``max_changes_per_field`` times over the soak; the spread
delta rises by at most +0.10 per iteration; every value is clamped to its valid range (the
``Overrides`` model); when three or more scenarios trigger at once only calming moves (wider,
slower, smaller) are applied (``calm_only`` says why this never skips a seed move under the
default policy; it bites on the walk-forward tuner's candidates); with
``freeze_after_convergence`` the tuner stops changing anything after the first iteration whose
net_bps reaches the OK band following at least one change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mm_sim.config import Overrides, field_bounds

# Direction of a "calming" change for each field: wider, slower, smaller, longer-lived.
CALMING_SIGN = {
    "base_spread_bps_delta": +1,
    "min_interval_ms": +1,
    "replace_rate_per_min": -1,
    "tail_age_ms": +1,
    "impact_cap_ratio": -1,
    "max_delta_ratio": -1,
}


@dataclass(frozen=True)
class TunerPolicy:
    """Every threshold and step of the seed's policy (docs/TUNER.md lists them from here)."""

    adverse_p95_trigger: float = 4.0
    order_age_p95_trigger_ms: float = 330.0
    block_ratio_limit: float = 0.40
    fallback_after: int = 2
    slippage_scale_bps: float = 2.0
    adverse_scale_bps: float = 2.0
    age_scale_ms: float = 330.0
    fallback_scale_bps: float = 3.0
    max_changes_per_field: int = 2
    max_spread_step: float = 0.10
    calm_only_triggers: int = 3
    ok_band_bps: float = 2.8
    # Emergency (mid-iteration) rule on a rolling window of fills.
    emergency_net_bps: float = -5.0
    emergency_min_fills: int = 20
    # Step ranges (low, high) of each scenario's moves, magnitudes.
    a_spread_step: tuple[float, float] = (0.02, 0.05)
    a_tail_age_step_ms: tuple[float, float] = (50, 100)
    b_impact_cap_step: tuple[float, float] = (0.02, 0.04)
    b_max_delta_step: tuple[float, float] = (0.02, 0.04)
    c_min_interval_step_ms: tuple[float, float] = (10, 20)
    c_replace_rate_step: tuple[float, float] = (30, 60)
    d_spread_step: tuple[float, float] = (0.05, 0.10)
    d_min_interval_step_ms: tuple[float, float] = (20, 40)
    d_replace_rate_step: tuple[float, float] = (40, 80)


# What each threshold means (docs/TUNER.md's table is built from this and the defaults).
POLICY_DOC = {
    "adverse_p95_trigger": "B fires when the adverse cost p95 (bps) is above this",
    "order_age_p95_trigger_ms": "C fires when the order-age p95 (ms) is above this, and healthy",
    "block_ratio_limit": "a block reason above this share of attempts: not healthy (no C)",
    "fallback_after": "D fires after this many consecutive iterations with net_bps < 0",
    "slippage_scale_bps": "A's full step at slippage_bps this far below 0",
    "adverse_scale_bps": "B's full step at adverse p95 this far above its trigger",
    "age_scale_ms": "C's full step at order-age p95 this far above its trigger",
    "fallback_scale_bps": "D's (and the emergency rule's) full step at net_bps this far below 0",
    "max_changes_per_field": "a field changes at most this many times over the soak",
    "max_spread_step": "base_spread_bps_delta rises by at most this per iteration",
    "calm_only_triggers": "this many scenarios at once: only calming moves (multi-fail guard)",
    "ok_band_bps": "--freeze-after-convergence freezes at the first net_bps >= this after a change",
    "emergency_net_bps": "mid-iteration fallback when the 5-min rolling net_bps is below this",
    "emergency_min_fills": "... over at least this many fills (once per iteration)",
    "a_spread_step": "A: base_spread_bps_delta + (low..high)",
    "a_tail_age_step_ms": "A: tail_age_ms + (low..high)",
    "b_impact_cap_step": "B: impact_cap_ratio − (low..high)",
    "b_max_delta_step": "B: max_delta_ratio − (low..high)",
    "c_min_interval_step_ms": "C: min_interval_ms − (low..high), rounded",
    "c_replace_rate_step": "C: replace_rate_per_min + (low..high), rounded",
    "d_spread_step": "D: base_spread_bps_delta + (low..high)",
    "d_min_interval_step_ms": "D: min_interval_ms + (low..high), rounded",
    "d_replace_rate_step": "D: replace_rate_per_min − (low..high), rounded",
}


@dataclass(frozen=True)
class IterationMetrics:
    """What the tuner reads from one iteration's edge report."""

    iteration: int
    net_bps: float
    slippage_bps: float
    adverse_p95: float
    order_age_p95_ms: float
    drivers: tuple[str, ...]
    block_ratios: dict[str, float] = field(default_factory=dict)
    fills: int = 0


@dataclass(frozen=True)
class Decision:
    iteration: int
    driver: str  # "slippage_bps", "adverse_bps", "order_age", "fallback", "emergency", "HOLD"
    field: str | None
    old: float | None
    new: float | None
    reason: str
    sim_ts: int | None = None

    @classmethod
    def hold(cls, iteration: int, reason: str, sim_ts: int | None = None) -> Decision:
        """No change this time, and why."""
        return cls(iteration, "HOLD", None, None, None, reason, sim_ts)

    def marker(self) -> str:
        """The greppable stdout line the seed names; the walk-forward tuner's names itself and
        says why (``| autotune | walk-forward | CHANGE or HOLD | why |``)."""
        if self.driver == "walk-forward":
            what = (
                "HOLD"
                if self.field is None
                else f"{self.field} {_fmt(self.old)} -> {_fmt(self.new)}"
            )
            return f"| autotune | walk-forward | {what} | {self.reason} |"
        if self.field is None:
            return f"| autotune | HOLD | {self.reason} |"
        change = f"{self.field} {_fmt(self.old)} -> {_fmt(self.new)}"
        return f"| autotune | DRIVER:{self.driver} | {change} |"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if abs(x) < 1000 else f"{x:.0f}"


def _clamp01(x: float) -> float:
    return 0.0 if x != x else max(0.0, min(1.0, x))


def _step(lo_hi: tuple[float, float], m: float) -> float:
    lo, hi = lo_hi
    return lo + (hi - lo) * _clamp01(m)


@dataclass
class TunerState:
    changes: dict[str, int] = field(default_factory=dict)
    negative_streak: int = 0
    frozen: bool = False
    changed_once: bool = False
    emergency_iterations: list[int] = field(default_factory=list)


class Tuner:
    def __init__(
        self,
        policy: TunerPolicy | None = None,
        freeze_after_convergence: bool = False,
        state: TunerState | None = None,
    ) -> None:
        self.policy = policy or TunerPolicy()
        self.freeze_after_convergence = freeze_after_convergence
        self.state = state or TunerState()

    # -- persistence (resume) ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    @classmethod
    def from_state(
        cls, data: dict[str, Any], policy: TunerPolicy | None = None, freeze: bool = False
    ) -> Tuner:
        return cls(policy, freeze, TunerState(**data))

    # -- policy -------------------------------------------------------------------------------
    def after_iteration(
        self, m: IterationMetrics, current: Overrides
    ) -> tuple[Overrides, list[Decision]]:
        """Decide the overrides for the next iteration from this iteration's metrics."""
        p = self.policy
        st = self.state
        st.negative_streak = st.negative_streak + 1 if m.net_bps < 0 else 0
        if st.frozen:
            return current, [Decision.hold(m.iteration, "frozen after convergence")]
        if self.freeze_after_convergence and st.changed_once and m.net_bps >= p.ok_band_bps:
            st.frozen = True
            why = f"converged: net_bps {m.net_bps:.3f} >= {p.ok_band_bps}; freezing"
            return current, [Decision.hold(m.iteration, why)]

        # (driver, field, delta, reason) proposals from each triggered scenario.
        proposals: list[tuple[str, str, float, str]] = []
        triggers = scenario_triggers(m, st.negative_streak, p)
        blocked = {k: v for k, v in m.block_ratios.items() if v > p.block_ratio_limit}
        if "A" in triggers:
            mm = -m.slippage_bps / p.slippage_scale_bps
            why = f"slippage_bps {m.slippage_bps:.3f} is a negative-edge driver"
            proposals.append(
                ("slippage_bps", "base_spread_bps_delta", _step(p.a_spread_step, mm), why)
            )
            proposals.append(("slippage_bps", "tail_age_ms", _step(p.a_tail_age_step_ms, mm), why))
        if "B" in triggers:
            mm = (m.adverse_p95 - p.adverse_p95_trigger) / p.adverse_scale_bps
            why = f"adverse cost p95 {m.adverse_p95:.3f} > {p.adverse_p95_trigger}"
            proposals.append(
                ("adverse_bps", "impact_cap_ratio", -_step(p.b_impact_cap_step, mm), why)
            )
            proposals.append(
                ("adverse_bps", "max_delta_ratio", -_step(p.b_max_delta_step, mm), why)
            )
        if "C" in triggers:
            mm = (m.order_age_p95_ms - p.order_age_p95_trigger_ms) / p.age_scale_ms
            why = (
                f"order_age_p95 {m.order_age_p95_ms:.0f} ms > "
                f"{p.order_age_p95_trigger_ms:.0f} and execution healthy"
            )
            proposals.append(
                ("order_age", "min_interval_ms", -round(_step(p.c_min_interval_step_ms, mm)), why)
            )
            proposals.append(
                ("order_age", "replace_rate_per_min", round(_step(p.c_replace_rate_step, mm)), why)
            )
        if "D" in triggers:
            proposals.extend(
                self._fallback(m.net_bps, f"net_bps < 0 for {st.negative_streak} iterations")
            )

        if not proposals:
            return current, [Decision.hold(m.iteration, _hold_reason(m, blocked))]

        return self._apply(m.iteration, current, proposals, calm_only(triggers, p), None)

    def emergency(
        self,
        iteration: int,
        rolling_net_bps: float,
        rolling_fills: int,
        current: Overrides,
        sim_ts: int,
    ) -> tuple[Overrides, list[Decision]]:
        """Mid-iteration rule: rolling net_bps collapsed → fallback now (once per iteration)."""
        p = self.policy
        st = self.state
        if (
            st.frozen
            or iteration in st.emergency_iterations
            or rolling_fills < p.emergency_min_fills
            or not rolling_net_bps < p.emergency_net_bps
        ):
            return current, []
        st.emergency_iterations.append(iteration)
        why = (
            f"rolling net_bps {rolling_net_bps:.2f} < {p.emergency_net_bps} "
            f"over {rolling_fills} fills"
        )
        props = [("emergency", f, d, why) for _, f, d, _ in self._fallback(rolling_net_bps, why)]
        return self._apply(iteration, current, props, True, sim_ts)

    def _fallback(self, net_bps: float, why: str) -> list[tuple[str, str, float, str]]:
        p = self.policy
        mm = -net_bps / p.fallback_scale_bps
        return [
            ("fallback", "base_spread_bps_delta", _step(p.d_spread_step, mm), why),
            ("fallback", "min_interval_ms", round(_step(p.d_min_interval_step_ms, mm)), why),
            ("fallback", "replace_rate_per_min", -round(_step(p.d_replace_rate_step, mm)), why),
        ]

    def _apply(
        self,
        iteration: int,
        current: Overrides,
        proposals: list[tuple[str, str, float, str]],
        calm_only: bool,
        sim_ts: int | None,
    ) -> tuple[Overrides, list[Decision]]:
        p = self.policy
        st = self.state
        values = current.as_dict()
        # Merge proposals per field (sum of deltas, first driver named), in a stable order.
        merged: dict[str, tuple[str, float, str]] = {}
        for driver, fname, delta, why in proposals:
            if fname in merged:
                d0, delta0, why0 = merged[fname]
                merged[fname] = (d0, delta0 + delta, why0)
            else:
                merged[fname] = (driver, delta, why)
        decisions: list[Decision] = []
        for fname, (driver, delta, why) in merged.items():
            old = values[fname]
            if calm_only and not is_calming(fname, delta):
                skip = (
                    f"{fname}: {driver} move skipped, {p.calm_only_triggers}+ triggers allow "
                    "only calming moves"
                )
                decisions.append(Decision.hold(iteration, skip, sim_ts))
                continue
            if st.changes.get(fname, 0) >= p.max_changes_per_field:
                skip = (
                    f"{fname}: {driver} move skipped, already changed "
                    f"{p.max_changes_per_field} times"
                )
                decisions.append(Decision.hold(iteration, skip, sim_ts))
                continue
            if fname == "base_spread_bps_delta":
                delta = min(delta, p.max_spread_step)
            new = _clamp_field(fname, old + delta)
            if new == old:
                skip = f"{fname}: {driver} move skipped, at the edge of its valid range"
                decisions.append(Decision.hold(iteration, skip, sim_ts))
                continue
            values[fname] = new
            st.changes[fname] = st.changes.get(fname, 0) + 1
            st.changed_once = True
            decisions.append(Decision(iteration, driver, fname, old, new, why, sim_ts))
        return Overrides.model_validate(values), decisions


def scenario_triggers(m: IterationMetrics, negative_streak: int, p: TunerPolicy) -> list[str]:
    """Which of the scenarios A–D this iteration's metrics trigger (the streak counts this
    iteration already). Shared with the walk-forward tuner, whose multi-fail guard reads it."""
    out = []
    a_trig = "slippage_bps" in m.drivers
    b_trig = m.adverse_p95 > p.adverse_p95_trigger
    blocked = any(v > p.block_ratio_limit for v in m.block_ratios.values())
    healthy = m.net_bps >= 0 and not a_trig and not b_trig and not blocked
    if a_trig:
        out.append("A")
    if b_trig:
        out.append("B")
    if m.order_age_p95_ms > p.order_age_p95_trigger_ms and healthy:
        out.append("C")
    if negative_streak >= p.fallback_after:
        out.append("D")
    return out


def calm_only(triggers: list[str], p: TunerPolicy) -> bool:
    """The multi-fail guard: with this many scenarios firing at once, only calming moves.

    Under the default policy it never skips a move of the seed tuner: C excludes A and B (its
    health test) and D (net_bps >= 0 vs a negative streak), so 3+ triggers means A+B+D, whose
    moves are all calming already. It bites on any move that is not calming: the walk-forward
    tuner's candidates, and C's moves under a policy with a lower ``calm_only_triggers``.
    """
    return len(triggers) >= p.calm_only_triggers


def is_calming(fname: str, delta: float) -> bool:
    """A change towards wider, slower, smaller, longer-lived quoting (``CALMING_SIGN``)."""
    return delta * CALMING_SIGN[fname] > 0


def _hold_reason(m: IterationMetrics, blocked: dict[str, float]) -> str:
    parts = [f"net_bps {m.net_bps:.3f}"]
    if m.drivers:
        parts.append("drivers " + ",".join(m.drivers) + " have no scenario")
    if blocked:
        parts.append("blocks above limit: " + ",".join(sorted(blocked)))
    if not m.drivers and not blocked:
        parts.append("no trigger")
    return "; ".join(parts)


def _clamp_field(fname: str, value: float) -> float:
    """Clamp to the Overrides model's declared bounds (one source of truth for ranges)."""
    lo, lo_open, hi, _ = field_bounds(Overrides.model_fields[fname])
    if lo is not None and (value < lo or (lo_open and value <= lo)):
        # An open lower bound (gt) cannot be reached: stop one small step above it.
        value = lo + (0.01 if lo_open else 0.0)
    if hi is not None and value > hi:
        value = hi
    return round(value, 6)
