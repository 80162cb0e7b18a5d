"""Model arms: the same soak under the other value of each rule that changes reported numbers.

Why: a net_bps figure is only as good as the fill model behind it, and the rules that matter
(docs/CORE.md, "Fill rules") are judgement calls a user may not share: whether a book moving
through a resting order without a print fills it, whether a print through our price fills the
whole order, whether the venue sees the feed in exchange-time order, whether quotes are
post-only, whether the strategy decides per message or per event, and the feed's clock
correction. Each arm flips one of them and runs a full engine
on the same events with the same overrides as the primary arm (tuner and operator changes
included), recorded in ``ROOT/models/NAME`` with the run directory's own layout, so its figures
come from recorded fills and marks like the primary's and ``mm_sim report`` can rebuild them.
The spread of net_bps across the arms is the model error bar (``report/model_bars.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.config import DecisionPoints, EventOrder, OrderType, Overrides, Profile, ThroughFill
from mm_sim.core.engine import Engine
from mm_sim.events import Instrument, atomic_write_json
from mm_sim.feeds.clock import shift_local
from mm_sim.report.model_bars import ARM_JSON, MODELS_DIR
from mm_sim.report.render import evaluate_pending
from mm_sim.report.runconfig import make_run_config
from mm_sim.report.rundir import RunDir
from mm_sim.runtime.arm_names import RULE_ARMS
from mm_sim.runtime.checkpoint import pack_state, read_npz, unpack_state, write_npz

CHECKPOINT = "checkpoint.npz"


@dataclass(frozen=True)
class ArmSpec:
    name: str  # directory name, e.g. "crossing_fills-false"
    switch: str  # the setting flipped, e.g. "matching.crossing_fills"
    value: str  # its value in this arm
    profile: Profile
    unshift_ns: int = 0  # subtracted from local_ts: the feed's clock correction undone


def _with(profile: Profile, section: str, **values: Any) -> Profile:
    part = getattr(profile, section).model_copy(update=values)
    return profile.model_copy(update={section: part})


def _crossing(p: Profile) -> tuple[str, str, Profile]:
    v = not p.matching.crossing_fills
    return "matching.crossing_fills", str(v).lower(), _with(p, "matching", crossing_fills=v)


def _through(p: Profile) -> tuple[str, str, Profile]:
    v = ThroughFill.order if p.matching.through_fill == ThroughFill.printed else ThroughFill.printed
    return "matching.through_fill", v.value, _with(p, "matching", through_fill=v)


def _order(p: Profile) -> tuple[str, str, Profile]:
    v = EventOrder.file if p.matching.event_order == EventOrder.exchange else EventOrder.exchange
    return "matching.event_order", v.value, _with(p, "matching", event_order=v)


def _type(p: Profile) -> tuple[str, str, Profile]:
    v = OrderType.limit if p.quoting.order_type == OrderType.post_only else OrderType.post_only
    return "quoting.order_type", v.value, _with(p, "quoting", order_type=v)


def _decide(p: Profile) -> tuple[str, str, Profile]:
    per_ts = p.quoting.decide == DecisionPoints.timestamp
    v = DecisionPoints.event if per_ts else DecisionPoints.timestamp
    return "quoting.decide", v.value, _with(p, "quoting", decide=v)


# Each rule gives (the setting, its other value, the profile with that value).
RULES: dict[str, Callable[[Profile], tuple[str, str, Profile]]] = dict(
    zip(RULE_ARMS, (_crossing, _through, _order, _type, _decide), strict=True)
)


def arm_specs(profile: Profile, names: tuple[str, ...], clock_shift_ns: int) -> list[ArmSpec]:
    """The arms to run: one per named rule (``clock`` only when the run shifts its clock)."""
    specs = []
    for name in names:
        if name == "clock":
            if clock_shift_ns:
                specs.append(ArmSpec("clock-raw", "clock", "raw", profile, clock_shift_ns))
            continue
        switch, value, prof = RULES[name](profile)
        specs.append(ArmSpec(f"{name}-{value}", switch, value, prof))
    return specs


class _Arm:
    def __init__(
        self, spec: ArmSpec, root: Path, overrides: Overrides, inst: Instrument, seed: int
    ):
        self.spec = spec
        self.engine = Engine(spec.profile, overrides, inst, seed)
        self.rd = RunDir(root / MODELS_DIR / spec.name)
        self.live = True  # False once it cannot follow the primary exactly (see ModelArms.open)
        self.rejected0 = 0  # the engine's post-only rejections when the iteration started

    def rejected(self) -> int:
        return int(self.engine.counters()["other"]["post_only_rejected"])

    def events(self, ev: np.ndarray) -> np.ndarray:
        if not self.spec.unshift_ns or not len(ev):
            return ev
        # the exact inverse of replay's shift (receipt-stamped events move back too)
        return shift_local(ev, -self.spec.unshift_ns)


class ModelArms:
    """The soak's model arms; the runner calls them beside the primary engine."""

    def __init__(
        self,
        root: Path,
        specs: list[ArmSpec],
        overrides: Overrides,
        instrument: Instrument,
        seed: int,
        checkpoints: bool = True,
    ) -> None:
        self.root = Path(root)
        self.checkpoints = checkpoints  # SoakConfig.checkpoints
        self.arms = [_Arm(s, self.root, overrides, instrument, seed) for s in specs]

    def open(self, run_info: Mapping[str, Any], resume: bool, committed: int | None) -> None:
        """Start or resume every arm. An arm that did not commit exactly the primary's
        iterations (a kill between the two commits) is dropped from the run, and says so."""
        for arm in self.arms:
            info = dict(run_info)
            cfg = make_run_config(
                settings=info.pop("settings"),
                profile=arm.spec.profile,
                overrides=info.pop("initial_overrides"),
                feed=info.pop("feed"),
                seed=info.pop("seed"),
                model_arm={"switch": arm.spec.switch, "value": arm.spec.value},
                **info,
            )
            lines = arm.rd.begin(cfg, resume=resume, drop_partial=True)
            done = len(lines)
            want = 0 if committed is None else committed + 1
            ck = arm.rd.soak / CHECKPOINT
            why = ""  # why the arm is dropped, if it is
            if done != want or (want and not ck.exists()):
                why = _earlier_drop(arm.rd.root) or (
                    "dropped on resume: its last commit did not match the primary arm's"
                )
            elif want:
                try:
                    arm.engine.load_state(unpack_state(read_npz(ck)))
                except Exception as exc:  # any damage: the run goes on without this arm
                    why = "dropped on resume: its checkpoint is damaged "
                    why += f"({type(exc).__name__}: {exc})"
                arm.rejected0 = arm.rejected()
            arm.live = not why
            atomic_write_json(
                arm.rd.root / ARM_JSON,
                {
                    "switch": arm.spec.switch,
                    "value": arm.spec.value,
                    "complete": arm.live,
                    "note": why,
                },
            )

    def run(self, events: np.ndarray, flush: bool, iteration: int) -> None:
        for arm in self.arms:
            if not arm.live:
                continue
            res = arm.engine.run(arm.events(events), flush=flush)
            fills = res.fills
            if len(fills):
                fills["iteration"] = iteration
            arm.rd.append(fills=fills, actions=res.actions, blocks=res.blocks, marks=res.marks)

    def set_overrides(self, o: Overrides) -> None:
        for arm in self.arms:
            arm.engine.set_overrides(o)

    def end_iteration(
        self, iteration: int, overrides: Overrides, ws_lag_p95_ms: float, partial: bool
    ) -> None:
        for arm in self.arms:
            if not arm.live:
                continue
            arm.rd.append(marks=arm.engine.mark_now())
            rejected = arm.rejected()
            pending = evaluate_pending(
                arm.rd, arm.spec.profile, iteration, ws_lag_p95_ms, rejected - arm.rejected0
            )
            arm.rejected0 = rejected
            if not partial and self.checkpoints:
                state = pack_state(arm.engine.state_arrays())
                write_npz(arm.rd.soak / CHECKPOINT, state, compressed=False)
            arm.rd.commit_iteration(pending, overrides=overrides, partial=partial)

    def close(self) -> None:
        for arm in self.arms:
            arm.rd.close()


def _earlier_drop(root: Path) -> str | None:
    """The reason an earlier resume gave for dropping this arm: a later resume finds its
    commits behind and would otherwise only say that."""
    try:
        d = json.loads((root / ARM_JSON).read_text())
    except (OSError, ValueError):
        return None
    note = d.get("note") if isinstance(d, dict) and d.get("complete") is False else None
    return note if isinstance(note, str) and note else None
