"""Loading with precedence (file, then environment, then --set flags) and one clear error
message naming where a bad value came from."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

from mm_sim.config.file_source import current_file
from mm_sim.config.overrides import Overrides
from mm_sim.config.paths import DEFAULT_OVERRIDES, DEFAULT_PROFILE, PROFILES_DIR
from mm_sim.config.profile import Profile
from mm_sim.errors import UserError, shown
from mm_sim.events import read_text_file


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"{path}: {what} file not found")
    try:
        data = json.loads(read_text_file(path, what))
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}:{exc.lineno}:{exc.colno}: invalid JSON in {what}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} must be a JSON object, got {type(data).__name__}")
    return data


def _line_of(path: Path, key: str) -> int | None:
    pattern = re.compile(r'"' + re.escape(key) + r'"\s*:')
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if pattern.search(line):
            return n
    return None


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        cur = out
        parts = dotted.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
    return out


M = TypeVar("M", bound=BaseSettings)


def _load(
    cls: type[M], path: Path | None, cli: dict[str, Any] | None, env_prefix: str, what: str
) -> M:
    file_data = read_json_file(path, what) if path is not None else {}
    cli = cli or {}
    _check_env_names(cls, env_prefix, what)
    token = current_file.set(file_data)
    try:
        return cls(**_nest(cli))
    except ValidationError as exc:
        raise UserError(_explain(exc, path, cli, env_prefix, what)) from None
    finally:
        current_file.reset(token)


def _check_env_names(cls: type[BaseModel], env_prefix: str, what: str) -> None:
    """An ``MM_PROFILE__*`` / ``MM_OVERRIDES__*`` variable that names no field is a typo the
    settings loader would silently ignore: refuse it, naming the variable."""
    for key in sorted(os.environ):
        if not key.upper().startswith(env_prefix):
            continue
        model: Any = cls
        parts = key[len(env_prefix) :].lower().split("__")
        for i, part in enumerate(parts):
            fields = getattr(model, "model_fields", None)
            if not fields or part not in fields:
                raise UserError(
                    f"environment {key}: no {what} field '{'.'.join(parts[: i + 1])}' "
                    "(check the spelling; see docs/CONFIG.md)"
                )
            model = fields[part].annotation


def _explain(
    exc: ValidationError,
    path: Path | None,
    cli: dict[str, Any],
    env_prefix: str,
    what: str,
    where: str | None = None,
) -> str:
    wrong = _wrong_kind(exc, path, what)
    if wrong:
        return f"invalid configuration: {wrong}"
    lines = []
    env_names = {k.upper() for k in os.environ}
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        dotted = ".".join(loc)
        value = err.get("input")
        # A rule across sections (config/profile.py, _can_quote) has no location of its own:
        # the fields it names in its context are where the values came from.
        fields = (err.get("ctx") or {}).get("fields", ())
        involved = [loc] if loc else [f.split(".") for f in fields]
        # The setting that gave the value: a --set of the field or of one inside it (a check
        # of a whole section, e.g. band order), else an MM_ variable of it or of a section
        # above it (MM_PROFILE__QUOTING='{"gamma": ...}'), else the file.
        flag = next(
            (
                k
                for part in involved
                for k in cli
                if k == ".".join(part) or k.startswith(".".join(part) + ".")
            ),
            None,
        )
        env_name = next(
            (
                name
                for part in involved
                for i in range(len(part), 0, -1)
                if (name := env_prefix + "__".join(part[:i]).upper()) in env_names
            ),
            None,
        )
        if where is not None:
            origin = where
        elif flag is not None:
            origin = f"command line --set {what}.{flag}"
        elif env_name is not None:
            origin = f"environment {env_name}"
        elif path is not None:
            line = next((n for part in involved if part and (n := _line_of(path, part[-1]))), None)
            origin = f"{path}:{line}" if line else str(path)
        else:
            origin = "defaults"
        if err["type"] == "extra_forbidden":
            expected = "no such field (check the spelling; see docs/CONFIG.md)"
        else:
            expected = err["msg"]
        if loc:
            lines.append(f"{origin}: {what} field '{dotted}' = {shown(value)}: {expected}")
        else:
            lines.append(f"{origin}: {what}: {expected}")
    return "invalid configuration: " + "; ".join(lines)  # one line, however many errors


def _wrong_kind(exc: ValidationError, path: Path | None, what: str) -> str | None:
    """A profile given as overrides (or the reverse): every top-level field unknown, and the
    other kind's. Said in one sentence instead of one error per field (a profile's dozens)."""
    errs = exc.errors()
    if path is None or not errs or any(e["type"] != "extra_forbidden" for e in errs):
        return None
    keys = {str(e["loc"][0]) for e in errs if len(e["loc"]) == 1}
    other, model = ("profile", Profile) if what == "overrides" else ("overrides", Overrides)
    if len(keys) < 2 or not keys <= set(model.model_fields):
        return None
    try:  # every key of the file unknown: a valid file with a few stray keys is not this
        if set(json.loads(path.read_text(encoding="utf-8"))) != keys:
            return None
    except (OSError, ValueError, TypeError):
        return None
    return (
        f"{path}: none of its fields ({', '.join(sorted(keys)[:4])}, ...) are {what} fields; it "
        f"looks like {'an' if other[0] in 'aeiou' else 'a'} {other} file: pass it as --{other}"
    )


def resolve_profile_path(name_or_path: str | os.PathLike[str] | None) -> Path:
    """``S1`` -> ``profiles/market_maker_S1.json``; anything else is a path."""
    if name_or_path is None:
        return DEFAULT_PROFILE
    s = str(name_or_path)
    named = PROFILES_DIR / f"market_maker_{s}.json"
    if "/" not in s and not s.endswith(".json") and named.exists():
        return named
    p = Path(s)
    if not s.strip() or (not p.exists() and not s.endswith(".json")):
        # (An empty name is Path("."), which read as ".: is a directory".)
        known = sorted(x.stem.removeprefix("market_maker_") for x in PROFILES_DIR.glob("*.json"))
        raise UserError(f"unknown profile {s!r}: not a file, and not one of {known}")
    return p


def load_profile(
    name_or_path: str | os.PathLike[str] | None = None, cli: dict[str, Any] | None = None
) -> Profile:
    return _load(Profile, resolve_profile_path(name_or_path), cli, "MM_PROFILE__", "profile")


def load_overrides(
    path: str | os.PathLike[str] | None = None, cli: dict[str, Any] | None = None
) -> Overrides:
    p = Path(path) if path is not None else DEFAULT_OVERRIDES
    return _load(Overrides, p, cli, "MM_OVERRIDES__", "overrides")


def validate_overrides_dict(data: dict[str, Any], where: str) -> Overrides:
    """Validate overrides arriving mid-run (operator edit, tuner): no env or CLI layering."""
    try:
        return Overrides.model_validate(data)
    except ValidationError as exc:
        raise UserError(_explain(exc, None, {}, "MM_OVERRIDES__", "overrides", where)) from None


def parse_set_flags(items: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``--set profile.a.b=V`` / ``--set overrides.x=V`` into two flat dicts."""
    prof: dict[str, Any] = {}
    ovr: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. overrides.tail_age_ms=700")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        head, _, rest = key.strip().partition(".")
        if head == "profile" and rest:
            prof[rest] = value
        elif head == "overrides" and rest:
            ovr[rest] = value
        else:
            raise UserError(
                f"--set {item!r}: key must start with 'profile.' or 'overrides.' "
                "(e.g. profile.fees.maker_bps=-0.5)"
            )
    return prof, ovr
