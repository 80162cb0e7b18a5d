"""GRID.toml: which override and profile values a sweep tries, parsed and checked up front.

Every key names a field of the runtime overrides (``overrides.<field>``) or of the profile
(``profile.<section>.<field>``); TOML tables (``[overrides]``, ``[profile.quoting]``) and dotted
keys are the same thing. A value is a list, a range table ``{start, stop, step}`` (``stop``
included when it lies on the grid), a table ``{values = [...]}``, or a single value (fixed for
the whole sweep). Every value is validated by the same pydantic models a soak uses, against the
base profile and overrides, and every cell (combination) is validated as a whole, so a bad grid
stops before any cluster starts, with the file, the line, the key and what was expected.

Some profile sections are refused: ``profile.gates`` is how a run is judged (a grid over it would
let the loosest gates win), and ``profile.fees`` and ``profile.instrument`` describe the venue,
not the strategy (a grid over them would pick the cheapest venue, not the best quoting). To
judge or price differently, sweep with another base ``--profile``. ``profile.latency`` stays
sweepable: "how would these values do with slower order entry?" is a what-if worth asking.
Booleans are refused where a number is expected (TOML ``true`` would otherwise become 1.0).

Cell ids hash the cell's validated values (not its position), so the same values keep the same
id when a grid grows, and ``--resume`` recognises finished cells.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mm_sim.config import Overrides, Profile
from mm_sim.errors import UserError, shown
from mm_sim.events import read_text_file

MAX_VALUES_PER_FIELD = 1000
MAX_CELLS = 100_000
_NOT_TUNABLE = {"name", "description"}
# Profile sections a grid may not sweep, and why (see the module docstring).
_FIXED_SECTIONS = {
    "gates": "the gates are how every cell is judged, not a strategy value: a grid over them "
    "would let the loosest gates win",
    "fees": "the fees describe the venue, not the strategy: a grid over them would pick the "
    "cheapest venue, not the best quoting",
    "instrument": "the instrument (tick, lot) describes the venue, not the strategy",
}
_EXPECTED = (
    "a list of values, a range table {start, stop, step}, a table {values = [...]} or one value"
)


class _Range(BaseModel):
    # NaN or inf would only fail later, counting the values
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    start: int | float
    stop: int | float
    step: int | float = Field(gt=0)


class _Values(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: list[Any] = Field(min_length=1)


@dataclass(frozen=True)
class Axis:
    """One swept field and its values (validated, in the grid's order)."""

    key: str  # overrides.<field> or profile.<section>.<field>
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Cell:
    """One combination of values: what a sweep runs on every feed."""

    index: int  # position in the grid (first field varies slowest)
    id: str
    values: tuple[tuple[str, Any], ...]  # (key, value) in the grid's field order

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def overrides(self, base: Overrides) -> Overrides:
        data = base.as_dict()
        for key, v in self.values:
            if key.startswith("overrides."):
                data[key.split(".", 1)[1]] = v
        return Overrides.model_validate(data)

    def profile(self, base: Profile) -> Profile:
        data = base.model_dump(mode="json")
        for key, v in self.values:
            if key.startswith("profile."):
                _set_path(data, key.split(".")[1:], v)
        return Profile.model_validate(data)

    def label(self) -> str:
        return " ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in self.values)


@dataclass(frozen=True)
class Grid:
    path: Path
    axes: tuple[Axis, ...]
    cells: tuple[Cell, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.axes)


def cell_id(values: tuple[tuple[str, Any], ...]) -> str:
    """Stable across runs, machines and grid growth: a hash of the sorted validated values."""
    canon = json.dumps(sorted(values), separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:12]


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    cur = data
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value


def get_path(data: dict[str, Any], path: Sequence[str]) -> Any:
    cur: Any = data
    for p in path:
        cur = cur[p]
    return cur


class _GridError(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


_KEY_LINE = re.compile(r"^\s*(?P<key>[^=\[#][^=]*?)\s*=")
_HEADER_LINE = re.compile(r"^\s*\[\[?(?P<name>[^\]]+)\]\]?\s*(#.*)?$")


def _norm_key(raw: str) -> str:
    """``"profile" . 'quoting'`` -> ``profile.quoting`` (quotes and blanks around dots dropped)."""
    return ".".join(p.strip().strip("\"'") for p in raw.split("."))


def _line_of(text: str, key: str) -> int | None:
    """The line that defines ``key`` (a dotted path), following the ``[table]`` headers.

    A key line ``k = ...`` under ``[t]`` defines ``t.k``. The answer is the line defining
    ``key`` itself; else the first line (or header) defining something inside it; else the
    line of the nearest enclosing key (an inline table holding it). Line-based: good for the
    grids people write, not a TOML parser.
    """
    table = ""
    inside: int | None = None
    enclosing: tuple[int, int] | None = None  # (length of the enclosing key, line)
    for n, line in enumerate(text.splitlines(), 1):
        header = _HEADER_LINE.match(line)
        if header:
            table = _norm_key(header.group("name"))
            full = table
        else:
            m = _KEY_LINE.match(line)
            if not m:
                continue
            local = _norm_key(m.group("key"))
            full = f"{table}.{local}" if table else local
        if full == key and not header:
            return n
        if inside is None and (full == key or full.startswith(key + ".")):
            inside = n
        elif (
            key.startswith(full + ".")
            and not header
            and (enclosing is None or enclosing[0] < len(full))
        ):
            enclosing = (len(full), n)
    if inside is not None:
        return inside
    return enclosing[1] if enclosing else None


# --------------------------------------------------------------------------------------------
# Keys: walk the TOML tables along the models' fields
# --------------------------------------------------------------------------------------------


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _fields_of(model: type[BaseModel]) -> list[str]:
    return sorted(n for n in model.model_fields if n not in _NOT_TUNABLE)


def _collect(
    head: str, model: type[BaseModel], prefix: tuple[str, ...], table: dict[str, Any]
) -> Iterator[tuple[str, Any]]:
    for raw_key, value in table.items():
        yield from _descend(head, model, prefix, raw_key.split("."), value)


def _descend(
    head: str, model: type[BaseModel], prefix: tuple[str, ...], parts: list[str], value: Any
) -> Iterator[tuple[str, Any]]:
    name, rest = parts[0], parts[1:]
    key = ".".join((head, *prefix, name))
    if head == "profile" and not prefix and name in _FIXED_SECTIONS:
        raise _GridError(
            ".".join((key, *rest)),
            f"'{key}' cannot be swept: {_FIXED_SECTIONS[name]}; set it in the base profile "
            "(--profile) instead",
        )
    if name not in model.model_fields or name in _NOT_TUNABLE:
        where = ".".join((head, *prefix))
        raise _GridError(
            ".".join((key, *rest)),
            f"'{where}' has no tunable field '{name}'; expected one of {_fields_of(model)} "
            "(see docs/CONFIG.md)",
        )
    sub = _submodel(model.model_fields[name].annotation)
    if sub is None:
        if rest:
            raise _GridError(
                ".".join((key, *rest)), f"'{key}' is a value, not a section: use the key '{key}'"
            )
        yield key, value
    elif rest:
        yield from _descend(head, sub, (*prefix, name), rest, value)
    elif isinstance(value, dict) and not (set(value) & {"start", "stop", "step", "values"}):
        yield from _collect(head, sub, (*prefix, name), value)
    else:
        raise _GridError(
            key, f"'{key}' is a section: name one of its fields {_fields_of(sub)}, e.g. {key}.x"
        )


def _keys(data: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for raw_key, value in data.items():
        head, *rest = raw_key.split(".")
        if head not in ("overrides", "profile"):
            raise _GridError(
                raw_key,
                f"unknown key '{raw_key}': expected overrides.<field> or profile.<section>.<field>",
            )
        model: type[BaseModel] = Overrides if head == "overrides" else Profile
        if rest:
            out.extend(_descend(head, model, (), rest, value))
        elif isinstance(value, dict):
            out.extend(_collect(head, model, (), value))
        else:
            raise _GridError(head, f"'{head}' must be a table of fields, e.g. [{head}]")
    seen: set[str] = set()
    for key, _ in out:
        if key in seen:
            raise _GridError(key, f"'{key}' is given twice")
        seen.add(key)
    return out


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def _range_values(key: str, r: _Range) -> list[int | float]:
    if r.stop < r.start:
        raise _GridError(key, f"range stop {r.stop!r} is below start {r.start!r}")
    n = math.floor((r.stop - r.start) / r.step + 1e-9) + 1
    if n > MAX_VALUES_PER_FIELD:
        raise _GridError(key, f"range gives {n} values; at most {MAX_VALUES_PER_FIELD} per field")
    if all(isinstance(x, int) for x in (r.start, r.stop, r.step)):
        return [int(r.start + i * r.step) for i in range(n)]
    # Rounded so that 0.1 + 2 * 0.1 is the 0.3 the user wrote, and cell ids stay stable.
    return [round(r.start + i * r.step, 12) for i in range(n)]


def _raw_values(key: str, spec: Any) -> list[Any]:
    if isinstance(spec, list):
        if not spec:
            raise _GridError(key, f"empty list; expected {_EXPECTED}")
        return spec
    if isinstance(spec, dict):
        try:
            if "values" in spec:
                return _Values.model_validate(spec).values
            return _range_values(key, _Range.model_validate(spec))
        except ValidationError as exc:
            errs = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'table'}: {e['msg']}" for e in exc.errors()
            )
            raise _GridError(
                key, f"invalid table {spec!r} ({errs}); expected {_EXPECTED}"
            ) from None
    return [spec]


def _annotation(key: str) -> Any:
    """The type annotation of the field ``key`` names (keys are already checked)."""
    head, *path = key.split(".")
    model: type[BaseModel] = Overrides if head == "overrides" else Profile
    for p in path[:-1]:
        sub = _submodel(model.model_fields[p].annotation)
        assert sub is not None
        model = sub
    return model.model_fields[path[-1]].annotation


def _validate_value(key: str, value: Any, base_o: Overrides, base_p: dict[str, Any]) -> Any:
    """The value as the model stores it (70 -> 70.0 for a float field), or a _GridError."""
    head, *path = key.split(".")
    ann = _annotation(key)
    if isinstance(value, bool) and ann is not bool:
        # pydantic would take true as 1.0: a typo that sweeps a value nobody meant.
        raise _GridError(
            key,
            f"value {str(value).lower()} is a boolean; expected {getattr(ann, '__name__', ann)}",
        )
    try:
        if head == "overrides":
            o = Overrides.model_validate({**base_o.as_dict(), path[0]: value})
            return float(getattr(o, path[0]))
        data = json.loads(json.dumps(base_p))
        _set_path(data, path, value)
        return get_path(Profile.model_validate(data).model_dump(mode="json"), path)
    except ValidationError as exc:
        msgs = "; ".join(e["msg"] for e in exc.errors())
        raise _GridError(key, f"value {shown(value)}: {msgs}") from None


def _axes(items: list[tuple[str, Any]], base_o: Overrides, base_p: Profile) -> list[Axis]:
    base_dump = base_p.model_dump(mode="json")
    axes = []
    for key, spec in items:
        values: list[Any] = []
        for raw in _raw_values(key, spec):
            v = _validate_value(key, raw, base_o, base_dump)
            if v in values:
                raise _GridError(key, f"value {raw!r} is listed twice (as {v!r})")
            values.append(v)
        if len(values) > MAX_VALUES_PER_FIELD:
            raise _GridError(key, f"{len(values)} values; at most {MAX_VALUES_PER_FIELD}")
        axes.append(Axis(key, tuple(values)))
    return axes


def _cells(axes: list[Axis], base_o: Overrides, base_p: Profile) -> list[Cell]:
    n = math.prod(len(a.values) for a in axes)
    if n > MAX_CELLS:
        raise _GridError(axes[0].key, f"the grid has {n:,} cells; at most {MAX_CELLS:,}")
    cells = []
    for i, combo in enumerate(itertools.product(*(a.values for a in axes))):
        values = tuple((a.key, v) for a, v in zip(axes, combo, strict=True))
        cell = Cell(i, cell_id(values), values)
        try:  # a rule spanning two fields (a model validator) holds only per combination
            cell.overrides(base_o)
            cell.profile(base_p)
        except ValidationError as exc:
            msgs = "; ".join(e["msg"] for e in exc.errors())
            raise _GridError(axes[0].key, f"the cell {cell.label()} is invalid: {msgs}") from None
        cells.append(cell)
    return cells


def load_grid(path: str | Path, base_profile: Profile, base_overrides: Overrides) -> Grid:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected a grid .toml file")
    if not p.is_file():
        raise UserError(f"{p}: grid file not found")
    text = read_text_file(p, "grid (TOML)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{p}: invalid TOML: {exc}") from None
    try:
        items = _keys(data)
        if not items:
            raise _GridError("", "no fields to sweep; add e.g. overrides.tail_age_ms = [500, 650]")
        axes = _axes(items, base_overrides, base_profile)
        cells = _cells(axes, base_overrides, base_profile)
    except _GridError as exc:
        line = _line_of(text, exc.key) if exc.key else None
        where = f"{p}:{line}" if line else str(p)
        key = f" key '{exc.key}':" if exc.key else ""
        raise UserError(f"{where}:{key} {exc.message}") from None
    return Grid(p, tuple(axes), tuple(cells))
