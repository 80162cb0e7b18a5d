"""docs/CONFIG.md is generated from the config models, so the docs cannot drift from the code.

``python -m mm_sim config docs > docs/CONFIG.md`` regenerates it; a test fails when the file
and the models disagree.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mm_sim.config import LocalSettings, Overrides, Profile, RunSettings, field_bounds

# Which component reads each section: the doc answers "what does this value change?".
READERS = {
    "instrument": "core/book.py (tick grid), core/quote.py (rounding) — null: from the feed",
    "quoting": "core/quote.py",
    "matching": "core/engine_params.py (fill rules), core/timeline.py (event order)",
    "inventory": "core/limiter.py (`risk` blocks)",
    "fees": "core/account.py (fee per fill), report/edge.py (fees_eff_bps)",
    "latency": "core/engine_params.py (order entry, cancel, ack timing)",
    "queue": "core/match.py (queue position)",
    "limiter": "core/limiter.py (`concurrency` and `throttle` blocks)",
    "gates": "report/gate.py (KPI_GATE.json, verdict)",
    "gates.hard": "report/gate.py (hard gates)",
    "gates.soft": "report/gate.py (soft gates)",
    "gates.bands": "report/gate.py (decision matrix)",
    "gates.venue_rules": "report/churn.py (Binance rule figures), report/gate.py (hard gates)",
    "gates.error_bars": "report/bootstrap.py (statistical error bars, band significance)",
}

# Units are read from a field's name, one "_"-separated word at a time (a substring test
# found "ratio" inside "iteration"). The last word names a unit (``*_ms``), or a word anywhere
# names a quantity (``*_ratio_*``); fields whose name says neither are listed by path.
LAST_WORD_UNITS = {"ms": "ms", "bps": "bps", "pct": "%", "s": "s", "minutes": "min"}
WORD_UNITS = (
    (("per", "min"), "1/min"),
    (("ratio",), "fraction"),
    (("qty",), "base units"),
    (("position",), "base units"),
    (("notional",), "quote currency"),
    (("bps",), "bps"),
)
PATH_UNITS = {
    "instrument.tick_size": "quote currency",
    "instrument.lot_size": "base units (contracts if inverse)",
    "instrument.contract_size": "quote currency",
    "gates.hard.adverse_p95_max": "bps",
    "gates.soft.slippage_p95_max": "bps",
    "gates.soft.slippage_p95_ideal": "bps",
    "gates.bands.success": "bps",
    "gates.bands.ok": "bps",
    "gates.bands.warn": "bps",
    "gates.venue_rules.ufr_ban": "fraction",
    "gates.venue_rules.icr_ban": "fraction",
    "gates.venue_rules.dr_ban": "fraction",
    "gates.venue_rules.ufr_recording_orders": "orders",
    "gates.venue_rules.icr_recording_orders": "orders",
    "gates.venue_rules.dr_recording_orders": "orders",
    "gates.error_bars.confidence": "fraction",
}


def unit_of(path: str) -> str:
    """The unit column of the field at dotted ``path`` ("" for counts, names and switches)."""
    if path in PATH_UNITS:
        return PATH_UNITS[path]
    words = path.rsplit(".", 1)[-1].split("_")
    if words[-1] in LAST_WORD_UNITS:
        return LAST_WORD_UNITS[words[-1]]
    for needed, unit in WORD_UNITS:
        if all(w in words for w in needed):
            return unit
    return ""


def _range(info: FieldInfo) -> str:
    def num(v: float) -> str:
        return str(int(v)) if v.is_integer() else repr(v)

    b = field_bounds(info)
    lo = "" if b.lower is None else f"{'>' if b.lower_open else '≥'} {num(b.lower)}"
    hi = "" if b.upper is None else f"{'<' if b.upper_open else '≤'} {num(b.upper)}"
    return ", ".join(x for x in (lo, hi) if x) or "any"


def _default(value: Any) -> str:
    if hasattr(value, "value"):
        value = value.value
    return "null" if value is None else f"{value}"


def _is_section(info: FieldInfo) -> bool:
    ann = info.annotation
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _rows(model: type[BaseModel], prefix: str, env_prefix: str, reader: str) -> list[str]:
    """The model's own fields (rows of the table the caller opened), then one titled table
    per sub-section: a field listed after a section would land in that section's table."""
    fields = model.model_fields.items()
    rows = _field_rows([(n, i) for n, i in fields if not _is_section(i)], prefix, env_prefix)
    for name, info in fields:
        if not _is_section(info):
            continue
        sub = f"{prefix}{name}"
        ann = info.annotation
        assert isinstance(ann, type) and issubclass(ann, BaseModel)
        inner = _rows(ann, f"{sub}.", f"{env_prefix}{name.upper()}__", READERS.get(sub, reader))
        rows.append(f"\n### `{sub}` — read by {READERS.get(sub, reader)}\n")
        if inner and inner[0].startswith("|"):
            rows += [TABLE_HEAD, TABLE_RULE]
        rows += inner
    return rows


TABLE_HEAD = "| field | meaning | unit | default | range | env |"
TABLE_RULE = "|---|---|---|---|---|---|"


def _field_rows(fields: list[tuple[str, FieldInfo]], prefix: str, env_prefix: str) -> list[str]:
    rows: list[str] = []
    for name, info in fields:
        ann = info.annotation
        choices = ""
        if isinstance(ann, type) and hasattr(ann, "__members__"):
            choices = " (" + " \\| ".join(ann.__members__) + ")"
        rows.append(
            f"| `{prefix}{name}` | {(info.description or '').replace('|', '/')}{choices} | "
            f"{unit_of(prefix + name)} | {_default(info.default)} | {_range(info)} | "
            f"`{env_prefix}{name.upper()}` |"
        )
    return rows


def render() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from `mm_sim/config/` by `python -m mm_sim config docs`; do not edit by "
        "hand (a test compares this file with the models).",
        "",
        "Precedence, lowest first: the JSON file → environment variables → "
        "`--set KEY=VALUE` flags. Run `python -m mm_sim config show` to print the effective "
        "values. An invalid value stops the program with the file and line (or variable, or "
        "flag), the field, the value and what was expected. A number field takes a number: "
        "`true`/`false` there is refused (not read as 1 or 0).",
        "",
        "## Profile (`profiles/market_maker_S1.json`, `--profile NAME|PATH`)",
        "",
        "CLI: `--set profile.<section>.<field>=VALUE`. "
        "Environment: `MM_PROFILE__<SECTION>__<FIELD>`.",
        "",
        "| field | meaning | unit | default | range | env |",
        "|---|---|---|---|---|---|",
    ]
    out += _rows(Profile, "", "MM_PROFILE__", "")
    out += [
        "",
        "## Runtime overrides (`overrides/runtime_overrides.json`, `--overrides PATH`)",
        "",
        "The six knobs the tuner and an operator may change mid-run (see docs/OVERRIDES.md for "
        "what each does in the core). CLI: `--set overrides.<field>=VALUE`. Environment: "
        "`MM_OVERRIDES__<FIELD>`. Read by core/quote.py and core/limiter.py; changed by "
        "runtime/tuner.py.",
        "",
        "| field | meaning | unit | default | range | env |",
        "|---|---|---|---|---|---|",
    ]
    out += _rows(Overrides, "", "MM_OVERRIDES__", "")
    out += [
        "",
        "## Run settings (`mm_sim soak` flags)",
        "",
        "Each has a flag (`--iteration-minutes` for `iteration_minutes`) and an environment "
        "variable `MM_<NAME>`; the flag wins. An `MM_` variable that is no setting here, no "
        "`MM_PROFILE__`/`MM_OVERRIDES__` field and none of `MM_BINANCE_API_KEY`, "
        "`MM_BINANCE_API_SECRET` (docs/LIVE.md) or `MM_BENCH_PIN` stops a soak, sweep or "
        "`validate tuner` when it is close to a known name (`MM_ITERATION`: did you mean "
        "`MM_ITERATIONS`?) and is warned about on stderr otherwise. `validate tuner` takes "
        "`profile`, `iterations` and `iteration_minutes` as a soak does, with its own defaults "
        "(S1, 4, 3) where neither flag nor variable gives one; the other run settings are the "
        "study's own (docs/TUNER.md).",
        "",
        "| field | meaning | unit | default | range | env |",
        "|---|---|---|---|---|---|",
    ]
    out += _rows(RunSettings, "", "MM_", "")
    out += [
        "",
        "## Local settings (environment only)",
        "",
        "How this machine runs a soak: where generated synthetic days are kept between runs "
        '(docs/SYNTHETIC.md, "Disk cache") and whether the model arms run in a second '
        "process. None of them changes a reported number, so none is part of a run's record.",
        "",
        "| field | meaning | unit | default | range | env |",
        "|---|---|---|---|---|---|",
    ]
    out += _rows(LocalSettings, "", "MM_", "")
    return "\n".join(out) + "\n"
