"""Operator edits of ``soak/runtime_overrides.json`` during a run: read, merge, or reject.

Why merge: an operator who writes ``{"tail_age_ms": 900}`` means "change this one knob", not
"reset the five others to the repository defaults". Fields the edit does not name keep the
values in force; named fields are validated with the same bounds as every other source. An
edit that cannot be read whole — not UTF-8, not JSON, not an object, an unknown field, a value
out of bounds — is rejected as a unit and the values in force are kept (never a mix). Each
outcome is logged, and each applied change becomes a ``Decision`` with driver ``operator`` in
the run record (metrics.jsonl, summary.txt, the reports).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mm_sim.config import Overrides, validate_overrides_dict
from mm_sim.errors import UserError
from mm_sim.runtime.tuner import Decision


@dataclass(frozen=True)
class OperatorEdit:
    """One new text seen in the overrides file: the merged overrides, or why it was rejected."""

    text: bytes
    overrides: Overrides | None
    changed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    error: str | None = None


def read_edit(path: Path, current: Overrides, seen: bytes | None) -> OperatorEdit | None:
    """The file's new content merged onto ``current``; None when unchanged or unreadable now.

    ``seen``: the bytes last written by this process or last handled, so a file that did not
    change is not parsed again.
    """
    try:
        raw = path.read_bytes()
    except OSError:
        return None  # being replaced, or removed: look again at the next poll
    if raw == seen:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return OperatorEdit(raw, None, error=f"{path}: not UTF-8 text (byte {exc.start})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return OperatorEdit(
            raw, None, error=f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
        )
    if not isinstance(data, dict):
        return OperatorEdit(
            raw,
            None,
            error=f"{path}: expected a JSON object of overrides, got {type(data).__name__}",
        )
    merged = {**current.as_dict(), **data}
    try:
        new = validate_overrides_dict(merged, str(path))
    except UserError as exc:
        return OperatorEdit(raw, None, error=str(exc))
    before, after = current.as_dict(), new.as_dict()
    changed = tuple(f for f in Overrides.FIELDS if before[f] != after[f])
    kept = tuple(f for f in Overrides.FIELDS if f not in data)
    return OperatorEdit(raw, new, changed, kept)


def operator_decisions(
    iteration: int, old: Overrides, new: Overrides, reason: str, sim_ts: int | None
) -> list[Decision]:
    """One ``operator`` decision per field the edit changed, for the run record."""
    a, b = old.as_dict(), new.as_dict()
    return [
        Decision(iteration, "operator", f, a[f], b[f], reason, sim_ts)
        for f in Overrides.FIELDS
        if a[f] != b[f]
    ]
