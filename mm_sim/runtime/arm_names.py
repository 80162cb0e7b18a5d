"""The model arms' names (runtime/model_arms.py), apart from it so that settings and the CLI can
check them without loading the core."""

from __future__ import annotations

RULE_ARMS = ("crossing_fills", "through_fill", "event_order", "order_type", "decide")
ALL = (*RULE_ARMS, "clock")


def parse_arms(value: str) -> tuple[str, ...]:
    """``all``, ``none`` or a comma-separated list of arm names."""
    v = value.strip().lower()
    if v == "all":
        return ALL
    if v in ("none", ""):
        return ()
    names = tuple(x.strip() for x in v.split(",") if x.strip())
    bad = [n for n in names if n not in ALL]
    if bad:
        raise ValueError(
            f"unknown model arm {bad[0]!r}; expected all, none or some of {', '.join(ALL)}"
        )
    return names
