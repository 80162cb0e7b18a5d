"""Settings of a run (``MM_<NAME>`` and the CLI's flags) and of the machine it runs on."""

from __future__ import annotations

import difflib
import os
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mm_sim.errors import UserError, shown


class RunSettings(BaseSettings):
    """Settings of one soak run; CLI flags override ``MM_<NAME>`` environment values."""

    model_config = SettingsConfigDict(
        env_prefix="MM_", extra="ignore", case_sensitive=False, allow_inf_nan=False
    )

    profile: str = Field("S1", description="Profile name in profiles/ or a path.")
    overrides: str | None = Field(
        None, description="Starting overrides file; null = overrides/runtime_overrides.json."
    )
    feed: str = Field("synthetic", description="Feed name in feeds/, a .npy feed or a .json.")
    iterations: int = Field(6, ge=1, le=10000, description="Number of iterations.")
    # 0.6 s at least: a shorter iteration holds a handful of events and marks, and its verdict
    # and the tuner's decision on it mean nothing (1e-9 min gave a verdict on 589 events).
    iteration_minutes: float = Field(
        30.0, ge=0.01, le=10080, description="Simulated minutes per iteration."
    )
    seed: int = Field(1, ge=0, lt=2**64, description="Seed of the synthetic market and the core.")
    artifacts: str = Field("artifacts", description="Output directory of the run.")
    # A tenth of real time at slowest: the replay sleeps between its 2 s chunks, so 1e-300
    # never ended, and Ctrl-C waits for the chunk being slept on (20 s at 0.1).
    speed: float | None = Field(
        None,
        ge=0.1,
        description="Replay pace vs the wall clock (1 = real time, 0.1 = ten times slower); "
        "null = max.",
    )
    clock: str = Field(
        "auto",
        description="Shift added to the feed's local_ts: auto = the feed's clock model, raw = "
        "none, or milliseconds (docs/FEEDS.md).",
    )

    model_arms: str = Field(
        "all",
        description="Fill-model arms run beside the soak for the model error bars: all, none or "
        "a comma-separated list of crossing_fills, through_fill, event_order, order_type, decide, "
        "clock (docs/REPORTS.md).",
    )
    tuner: Literal["seed", "walk-forward"] = Field(
        "seed",
        description="Who tunes the overrides between iterations: seed = the seed's scenarios "
        "A-D, walk-forward = counterfactual replays of each iteration (docs/TUNER.md).",
    )
    shadow: int = Field(
        0,
        ge=0,
        le=12,
        description="Shadow arms: engines running candidate overrides on the same events, "
        "paper only (docs/TUNER.md).",
    )
    scheduler: str | None = Field(
        None,
        description="Dask scheduler (tcp://HOST:PORT) for the walk-forward replays; null = in "
        "the soak's process.",
    )

    @field_validator("clock", mode="before")
    @classmethod
    def _clock(cls, v: Any) -> str:
        from mm_sim.feeds.clock import parse_clock_setting

        return parse_clock_setting(v)

    @field_validator("model_arms", mode="before")
    @classmethod
    def _model_arms(cls, v: Any) -> str:
        from mm_sim.runtime.arm_names import parse_arms

        return ",".join(parse_arms(str(v))) or "none"


class LocalSettings(BaseSettings):
    """How this machine runs a soak (``MM_<NAME>``): settings that never change a reported
    number, so they are not part of a run's record (a cached feed is byte-identical to a
    generated one; the model arms give the same records in a second process or inline)."""

    model_config = SettingsConfigDict(
        env_prefix="MM_", extra="ignore", case_sensitive=False, allow_inf_nan=False
    )

    synthetic_cache: bool = Field(
        True,
        description="Keep each generated synthetic day on disk and reuse it when the feed "
        "definition, seed, duration and generator are the same (docs/SYNTHETIC.md).",
    )
    synthetic_cache_dir: str | None = Field(
        None,
        description="Directory of the synthetic feed cache; null = $XDG_CACHE_HOME/mm_sim/"
        "synthetic (~/.cache/mm_sim/synthetic).",
    )
    synthetic_cache_max_mb: float = Field(
        2048.0,
        ge=0,
        le=1e7,
        description="Size cap of the cache; the least recently used days are removed beyond it.",
    )
    sweep_feed_cache_mb: float = Field(
        1024.0,
        ge=0,
        le=1e7,
        description="Per sweep worker process: feeds up to this size are read into memory on "
        "a worker's first cell on them and kept for its next cells; larger ones stay memory-"
        "mapped (opened and verified once); 0 = every cell opens its feed (docs/SWEEP.md).",
    )
    model_arms_process: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Where the fill-model arms run: always = in a second (forked) process beside "
        "the primary engine; never = after it on each chunk, in the soak's process; auto = the "
        "second process when a core is idle for it, judged from the cores' idle time over the "
        "command's start-up and any container CPU limit (docs/REPORTS.md).",
    )


def load_local_settings() -> LocalSettings:
    try:
        return LocalSettings()
    except ValidationError as exc:
        errs = [
            f"environment MM_{'.'.join(map(str, e['loc'])).upper()} = {shown(e.get('input'))}: "
            f"{e['msg']}"
            for e in exc.errors()
        ]
        raise UserError("invalid local settings: " + "; ".join(errs)) from None


class _GivenRunSettings(RunSettings):
    """RunSettings whose only source is the values given: see ``given_run_settings``."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def given_run_settings(**fields: Any) -> RunSettings:
    """The settings of a run a program starts (a sweep cell, a validation study's run): what
    it gives, and each field's default for the rest, never ``MM_<NAME>``. Those variables are
    the user's settings for their own soak: read here, MM_SHADOW ran shadow arms in every
    sweep cell and MM_TUNER or MM_CLOCK was named in run.json for runs that used neither."""
    return _GivenRunSettings(**fields)


def load_run_settings(cli: dict[str, Any]) -> RunSettings:
    try:
        return RunSettings(**{k: v for k, v in cli.items() if v is not None})
    except ValidationError as exc:
        errs = []
        for e in exc.errors():
            name = ".".join(str(p) for p in e["loc"])
            from_flag = cli.get(name) is not None  # a flag left unset falls back to MM_<NAME>
            origin = (
                f"--{name.replace('_', '-')}" if from_flag else f"environment MM_{name.upper()}"
            )
            errs.append(f"{origin} = {shown(e.get('input'))}: {e['msg']}")
        raise UserError("invalid run settings: " + "; ".join(errs)) from None


# MM_ names read outside these models: the profile's and overrides' own prefixes (their names
# are checked on load, config/loading.py), the Binance credentials (venues/binance/credentials.py)
# and the live-latency bench's core pinning (benchmarks/live_latency.py, docs/LIVE.md).
OTHER_ENV_PREFIXES = ("MM_PROFILE__", "MM_OVERRIDES__", "MM_BINANCE_")
OTHER_ENV = ("MM_BENCH_PIN",)


def check_env_names() -> None:
    """An ``MM_`` variable that names no setting is ignored by the settings loader, so a typo
    (``MM_ITERATION=1``) silently ran the default 6 x 30 minutes. One close to a known name is
    refused naming it; any other is warned about (it may belong to another tool)."""
    from mm_sim.logs import get_logger

    known = sorted(
        {f"MM_{n.upper()}" for n in (*RunSettings.model_fields, *LocalSettings.model_fields)}
        | set(OTHER_ENV)
    )
    for key in sorted(os.environ):
        name = key.upper()
        if not name.startswith("MM_") or name in known or name.startswith(OTHER_ENV_PREFIXES):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if close:
            raise UserError(
                f"environment {key}: not an mm_sim setting; did you mean {close[0]}? "
                "(see docs/CONFIG.md)"
            )
        get_logger("mm_sim.config").warning(
            "environment variable ignored: not an mm_sim setting (see docs/CONFIG.md)", name=key
        )
