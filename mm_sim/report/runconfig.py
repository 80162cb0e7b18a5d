"""What run.json holds: the run's configuration, its record layouts, and which changes a
resumed run may not make (a resume that replays other events, or under other rules, would
append records of a different run to this one's)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError

from mm_sim.config import Overrides, Profile
from mm_sim.core.records import ACTION_DTYPE, BLOCK_DTYPE, FILL_DTYPE, MARK_DTYPE
from mm_sim.errors import UserError, shown
from mm_sim.report.schema import RunConfig, dump

RECORD_DTYPES: dict[str, np.dtype] = {
    "fills": FILL_DTYPE,
    "actions": ACTION_DTYPE,
    "blocks": BLOCK_DTYPE,
    "marks": MARK_DTYPE,
}

# Settings of a run that must not change when it is resumed (others, e.g. iterations, may).
RESUME_IDENTITY = ("profile", "initial_overrides", "feed", "seed")
# Run settings and runner switches that change what a run means, named as the user sets them.
RESUME_SETTINGS = {"iteration_minutes": "--iteration-minutes", "tuner": "--tuner"}
RESUME_SWITCHES = {
    "tune": "--no-tune",
    "control": "--control",
    "freeze_after_convergence": "--freeze-after-convergence",
}
# Feed identity keys that only say how much of a generated market exists, not what it is: a
# longer synthetic day starts with exactly the events of a shorter one (more iterations).
_FEED_LENGTH_KEYS = ("duration_s", "count")


def record_layout(dt: np.dtype) -> dict[str, str]:
    """A record dtype as run.json describes it: field name -> numpy type string, in order
    (``np.dtype(list(layout.items()))`` rebuilds it; the records have no padding)."""
    return {str(f[0]): str(f[1]) for f in np.lib.format.dtype_to_descr(dt)}


def stored_layout(value: Any) -> dict[str, str] | None:
    """A layout read from run.json; runs written before the plain form stored numpy's descr
    as JSON text inside the JSON, which is read too. ``None`` when it is neither."""
    if isinstance(value, str):
        try:
            value = {str(n): str(t) for n, t in json.loads(value)}
        except (ValueError, TypeError):
            return None
    return dict(value) if isinstance(value, dict) else None


def make_run_config(
    *,
    settings: Mapping[str, Any],
    profile: Profile,
    overrides: Overrides | Mapping[str, float],
    feed: Mapping[str, Any],
    seed: int | None,
    **extra: Any,
) -> RunConfig:
    """Everything needed to rebuild the reports (and to check a resume continues the same run).

    ``extra`` keys (JSON-serialisable) are stored in run.json as well; they are not compared
    on resume.
    """
    ovr = overrides.as_dict() if isinstance(overrides, Overrides) else dict(overrides)
    return RunConfig(
        **json.loads(json.dumps(extra, default=str)),
        settings=json.loads(json.dumps(dict(settings), default=str)),
        profile=profile.model_dump(mode="json"),
        initial_overrides={k: float(v) for k, v in ovr.items()},
        feed=json.loads(json.dumps(dict(feed), default=str)),
        seed=seed,
        records={k: record_layout(dt) for k, dt in RECORD_DTYPES.items()},
    )


def _feed_identity(feed: Mapping[str, Any]) -> dict[str, Any]:
    if feed.get("kind") == "synthetic":
        return {k: v for k, v in feed.items() if k not in _FEED_LENGTH_KEYS}
    clock = feed.get("clock")
    if feed.get("kind") == "binance-ws" and isinstance(clock, dict):
        # A live feed measures its clock offset anew at each session's start: the setting is
        # part of what the run means, the measurement is not.
        return {**feed, "clock": {"mode": clock.get("mode")}}
    return dict(feed)


def _show(v: Any) -> str:
    return json.dumps(v) if isinstance(v, str | int | float | bool) or v is None else "..."


def resume_conflicts(stored: RunConfig, new: RunConfig) -> list[str]:
    """Every setting that differs between a run and its resumption and would change what the
    run means, each named as the user sets it (a flag, or the file and its overrides)."""
    a, b = dump(stored), dump(new)
    out: list[str] = []
    if a.get("profile") != b.get("profile"):
        out.append("profile (--profile, --set profile.*, MM_PROFILE__*)")
    if a.get("initial_overrides") != b.get("initial_overrides"):
        out.append("starting overrides (--overrides, --set overrides.*, MM_OVERRIDES__*)")
    if _feed_identity(a.get("feed") or {}) != _feed_identity(b.get("feed") or {}):
        out.append("--feed (the stored run replays other events)")
    if a.get("seed") != b.get("seed"):
        out.append(f"--seed (run: {_show(a.get('seed'))}, now: {_show(b.get('seed'))})")
    sa, sb = a.get("settings") or {}, b.get("settings") or {}
    for key, flag in RESUME_SETTINGS.items():
        if key in sa and sa.get(key) != sb.get(key):
            out.append(f"{flag} (run: {_show(sa.get(key))}, now: {_show(sb.get(key))})")
    for key, flag in RESUME_SWITCHES.items():
        if key in a and a.get(key) != b.get(key):
            was, now = bool(a.get(key)), bool(b.get(key))
            if flag.startswith("--no-"):
                was, now = not was, not now
            out.append(f"{flag} (run: {'with' if was else 'without'}, now: "
                       f"{'with' if now else 'without'})")  # fmt: skip
    return out


def profile_from_config(cfg: RunConfig, where: str) -> Profile:
    """The profile recorded in run.json (used by ``mm_sim report`` to rebuild with its gates)."""
    try:
        return Profile.model_validate(cfg.profile)
    except ValidationError as exc:
        what = "; ".join(
            f"field '{'.'.join(['profile', *map(str, e['loc'])])}' = {shown(e.get('input'))}: "
            f"{e['msg']}"
            for e in exc.errors()
        )
        raise UserError(f"{where}: the recorded profile is not valid: {what}") from None
