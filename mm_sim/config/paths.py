"""Where the shipped profiles, overrides and feed definitions live (the repository's folders)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PROFILES_DIR = REPO_ROOT / "profiles"
OVERRIDES_DIR = REPO_ROOT / "overrides"
FEEDS_DIR = REPO_ROOT / "feeds"
DEFAULT_PROFILE = PROFILES_DIR / "market_maker_S1.json"
DEFAULT_OVERRIDES = OVERRIDES_DIR / "runtime_overrides.json"
