"""Typed configuration: the only source of truth for every tunable value.

Three models, each loaded from a JSON file and then overridden, in this order of precedence
(highest last):

1. the JSON file (``profiles/market_maker_S1.json``, ``overrides/runtime_overrides.json``);
2. environment variables: ``MM_PROFILE__<SECTION>__<FIELD>`` and ``MM_OVERRIDES__<FIELD>``
   (``__`` separates nesting levels; names are case-insensitive);
3. command-line ``--set profile.<section>.<field>=VALUE`` / ``--set overrides.<field>=VALUE``.

Run settings (iterations, seed, feed, ...) come from ``MM_<NAME>`` and their own CLI flags.
Any invalid value stops the program with one message naming where it came from (file and line,
environment variable or flag), the field, the value and what was expected.

The models live in one module per job: ``overrides`` (the six runtime knobs and their bounds),
``profile`` (the strategy profile's sections), ``loading`` (precedence and error messages),
``settings`` (run and machine settings), ``paths`` (the shipped files). Import them from here.
"""

from __future__ import annotations

from mm_sim.config.loading import (
    load_overrides,
    load_profile,
    parse_set_flags,
    read_json_file,
    resolve_profile_path,
    validate_overrides_dict,
)
from mm_sim.config.overrides import Bounds, Overrides, Section, field_bounds
from mm_sim.config.paths import (
    DEFAULT_OVERRIDES,
    DEFAULT_PROFILE,
    FEEDS_DIR,
    OVERRIDES_DIR,
    PROFILES_DIR,
    REPO_ROOT,
)
from mm_sim.config.profile import (
    DecisionBands,
    DecisionPoints,
    ErrorBarsCfg,
    EventOrder,
    FeesCfg,
    GatesCfg,
    HardGates,
    InstrumentCfg,
    InventoryCfg,
    LatencyCfg,
    LatencyMode,
    LimiterCfg,
    MatchingCfg,
    OrderType,
    Profile,
    QueueCfg,
    QueueModel,
    QuotingCfg,
    SoftGates,
    ThroughFill,
    VenueRuleGates,
)
from mm_sim.config.settings import (
    LocalSettings,
    RunSettings,
    check_env_names,
    given_run_settings,
    load_local_settings,
    load_run_settings,
)

__all__ = [
    "DEFAULT_OVERRIDES",
    "DEFAULT_PROFILE",
    "FEEDS_DIR",
    "OVERRIDES_DIR",
    "PROFILES_DIR",
    "REPO_ROOT",
    "Bounds",
    "DecisionBands",
    "DecisionPoints",
    "ErrorBarsCfg",
    "EventOrder",
    "FeesCfg",
    "GatesCfg",
    "HardGates",
    "InstrumentCfg",
    "InventoryCfg",
    "LatencyCfg",
    "LatencyMode",
    "LimiterCfg",
    "LocalSettings",
    "MatchingCfg",
    "OrderType",
    "Overrides",
    "Profile",
    "QueueCfg",
    "QueueModel",
    "QuotingCfg",
    "RunSettings",
    "Section",
    "SoftGates",
    "ThroughFill",
    "VenueRuleGates",
    "check_env_names",
    "field_bounds",
    "given_run_settings",
    "load_local_settings",
    "load_overrides",
    "load_profile",
    "load_run_settings",
    "parse_set_flags",
    "read_json_file",
    "resolve_profile_path",
    "validate_overrides_dict",
]
