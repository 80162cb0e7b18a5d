"""Configuration: precedence, error messages, and docs generated from the models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mm_sim.config import load_overrides, load_profile, parse_set_flags
from mm_sim.configdoc import render
from mm_sim.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def test_shipped_files_hold_the_seed_baseline() -> None:
    o = load_overrides()
    assert o.as_dict() == {
        "min_interval_ms": 70.0,
        "replace_rate_per_min": 280.0,
        "base_spread_bps_delta": 0.10,
        "tail_age_ms": 650.0,
        "impact_cap_ratio": 0.09,
        "max_delta_ratio": 0.14,
    }
    p = load_profile("S1")
    assert p.gates.hard.net_bps_min == 2.5 and p.gates.bands.success == 3.0


def test_precedence_file_then_env_then_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_profile().fees.maker_bps == -0.5
    monkeypatch.setenv("MM_PROFILE__FEES__MAKER_BPS", "-0.7")
    assert load_profile().fees.maker_bps == -0.7
    prof, _ = parse_set_flags(["profile.fees.maker_bps=-0.9"])
    assert load_profile(cli=prof).fees.maker_bps == -0.9
    monkeypatch.setenv("MM_OVERRIDES__TAIL_AGE_MS", "700")
    assert load_overrides().tail_age_ms == 700


def test_bad_file_value_names_file_line_field_value_and_expectation(tmp_path: Path) -> None:
    bad = tmp_path / "o.json"
    bad.write_text('{\n  "min_interval_ms": 70,\n  "tail_age_ms": 1,\n  "tial_age": 3\n}\n')
    with pytest.raises(UserError) as ei:
        load_overrides(bad)
    msg = str(ei.value)
    assert f"{bad}:3: overrides field 'tail_age_ms' = 1: Input should be greater" in msg
    assert f"{bad}:4: overrides field 'tial_age' = 3: no such field" in msg


def test_bad_env_and_cli_values_name_their_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MM_OVERRIDES__IMPACT_CAP_RATIO", "lots")
    with pytest.raises(UserError, match="environment MM_OVERRIDES__IMPACT_CAP_RATIO"):
        load_overrides()
    monkeypatch.delenv("MM_OVERRIDES__IMPACT_CAP_RATIO")
    _, ovr = parse_set_flags(["overrides.max_delta_ratio=0"])
    with pytest.raises(UserError, match=r"command line --set overrides\.max_delta_ratio"):
        load_overrides(cli=ovr)


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text('{\n  "name": "x",\n  "fees": {"maker_bps": }\n}\n')
    with pytest.raises(UserError, match=r"p.json:3:\d+: invalid JSON in profile"):
        load_profile(bad)


def test_cli_prints_one_clear_error_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "o.json"
    bad.write_text(json.dumps({"min_interval_ms": -1}))
    r = subprocess.run(
        [sys.executable, "-m", "mm_sim", "config", "show", "--overrides", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "'min_interval_ms' = -1" in r.stderr and "greater than or equal to 0" in r.stderr


def test_config_docs_match_the_models() -> None:
    doc = (REPO / "docs" / "CONFIG.md").read_text()
    assert doc == render(), "docs/CONFIG.md is stale: run `python -m mm_sim config docs`"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mark_interval_ms", 1e-9),  # rounded to 0 ns: the engine divided by it
        ("mark_interval_ms", 0.5),
        ("gates.venue_rules.cycle_s", 1e-10),  # rounded to 0 ns: the report divided by it
        ("gates.error_bars.block_s", 1e-10),  # likewise
    ],
)
def test_durations_rounded_to_ns_have_a_floor(key: str, value: float) -> None:
    prof, _ = parse_set_flags([f"profile.{key}={value}"])
    with pytest.raises(UserError, match=rf"--set profile\.{key}.*greater than or equal to 1"):
        load_profile(cli=prof)


def test_a_tiny_mark_interval_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MM_PROFILE__MARK_INTERVAL_MS", "1e-9")
    with pytest.raises(UserError, match="environment MM_PROFILE__MARK_INTERVAL_MS"):
        load_profile()


def _profile_file(tmp_path: Path, change: dict[str, dict[str, object]]) -> Path:
    data = json.loads((REPO / "profiles" / "market_maker_S1.json").read_text())
    for section, values in change.items():
        data[section].update(values)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def test_a_boolean_is_not_a_number(tmp_path: Path) -> None:
    """``"order_qty": true`` was read as 1.0 (an order of one coin: no quote ever placed)."""
    path = _profile_file(tmp_path, {"quoting": {"order_qty": True}})
    with pytest.raises(UserError, match=r"'quoting.order_qty' = True: Input should be a number"):
        load_profile(path)
    _, ovr = parse_set_flags(["overrides.tail_age_ms=false"])
    with pytest.raises(UserError, match="'tail_age_ms' = False"):
        load_overrides(cli=ovr)
    # a switch still takes one, and an integer is still a fine float
    prof, _ = parse_set_flags(["profile.matching.crossing_fills=false", "profile.fees.taker_bps=4"])
    assert load_profile(cli=prof).matching.crossing_fills is False


def test_an_order_above_the_position_limit_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = _profile_file(tmp_path, {"quoting": {"order_qty": 1e308}})
    with pytest.raises(UserError) as ei:
        load_profile(path)
    msg = str(ei.value)
    assert f"{path}:" in msg and "order_qty 1e+308 is above inventory.max_position 0.1" in msg
    assert len(msg) < 300  # the message names the rule, not the whole profile
    prof, _ = parse_set_flags(["profile.inventory.max_position=0.005"])
    with pytest.raises(UserError, match=r"--set profile\.inventory\.max_position: profile: "):
        load_profile(cli=prof)


def test_config_show_takes_the_files_named_in_the_environment(tmp_path: Path) -> None:
    """`config show` prints the effective configuration: MM_PROFILE and MM_OVERRIDES choose
    the files as they do for a soak (it printed S1 and the shipped overrides whatever they
    said, and exit 0 for a profile that does not exist)."""
    prof = json.loads((REPO / "profiles" / "market_maker_S1.json").read_text())
    prof["fees"]["maker_bps"] = -0.9
    (tmp_path / "p.json").write_text(json.dumps(prof))
    (tmp_path / "o.json").write_text(json.dumps({"tail_age_ms": 777}))

    def show(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mm_sim", "config", "show", *args],
            capture_output=True, text=True, cwd=REPO, env={**os.environ, **env}, timeout=120,
        )  # fmt: skip

    env = {"MM_PROFILE": str(tmp_path / "p.json"), "MM_OVERRIDES": str(tmp_path / "o.json")}
    r = show(env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["profile"]["fees"]["maker_bps"] == -0.9
    assert got["overrides"]["tail_age_ms"] == 777.0
    r = show(env, "--profile", "S1")  # a flag still wins
    assert json.loads(r.stdout)["profile"]["fees"]["maker_bps"] == load_profile("S1").fees.maker_bps
    r = show({"MM_PROFILE": "S9"})
    assert r.returncode == 2 and "unknown profile 'S9'" in r.stderr and "Traceback" not in r.stderr
