"""Settings that mean nothing (a mark step rounding to 0 ns, a pace or a run too short to
measure, a profile that can never quote on the feed, a typo in an MM_ variable), refused
through the real CLI (in this process, as test_bad_inputs.py's table) before a run starts, to
the standard of test_bad_inputs.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from refusal_harness import REPO, TINY, assert_refused, cli


def test_a_tiny_mark_interval_in_a_profile_is_refused_before_a_run_starts(tmp_path: Path) -> None:
    """1e-9 ms passed '> 0' and rounded to 0 ns: the soak died dividing by it (exit 70) and left
    a run directory with an empty metrics.jsonl."""
    prof = json.loads((REPO / "profiles" / "market_maker_S1.json").read_text())
    prof["mark_interval_ms"] = 1e-9
    path = tmp_path / "p.json"
    path.write_text(json.dumps(prof, indent=1))
    out = tmp_path / "a"
    r = cli("soak", "--profile", str(path), *TINY, "--model-arms", "none", "-o", str(out))
    assert_refused(r, f"{path}:")
    assert "mark_interval_ms" in r.stderr and not out.exists()


@pytest.mark.parametrize(
    ("flags", "culprit"),
    [
        (["--speed", "1e-300"], "--speed = 1e-300: Input should be greater than or equal to 0.1"),
        (["--iteration-minutes", "1e-9"], "--iteration-minutes = 1e-09"),
        (["--set", "profile.mark_interval_ms=60000"], "shorter than the profile's mark_interval"),
    ],
)
def test_run_lengths_and_paces_that_mean_nothing_are_refused(
    tmp_path: Path, flags: list[str], culprit: str
) -> None:
    """--speed 1e-300 slept past 300 s on its first chunk; --iteration-minutes 1e-9 gave a
    verdict on 589 events; an iteration shorter than the mark step has no mark."""
    out = tmp_path / "a"
    r = cli("soak", "--feed", "synthetic-short", *TINY, *flags, "-o", str(out), timeout=120)
    assert_refused(r, culprit)
    assert not out.exists()


@pytest.mark.parametrize(
    ("setting", "culprit"),
    [
        ("instrument.tick_size=1e6", "instrument.tick_size 1e+06 is 1e+07x the feed's own 0.1"),
        ("instrument.tick_size=1e-12", "instrument.tick_size 1e-12 is 1e-11x the feed's own 0.1"),
        ("inventory.max_notional=100", "above inventory.max_notional 100"),
    ],
)
def test_a_profile_that_cannot_quote_on_the_feed_is_refused(
    tmp_path: Path, setting: str, culprit: str
) -> None:
    """These ran to a FAIL verdict on 0 fills (exit 0) with at most a note."""
    out = tmp_path / "a"
    r = cli("soak", "--feed", "synthetic-short", *TINY, "--model-arms", "none",
            "--set", f"profile.{setting}", "-o", str(out))  # fmt: skip
    assert_refused(r, culprit)
    assert not out.exists()


def test_a_negative_clock_in_exponent_form_reaches_its_own_check(tmp_path: Path) -> None:
    out = str(tmp_path / "a")
    r = cli("soak", "--feed", "synthetic-short", *TINY, "--clock", "-1e20", "-o", out)
    assert_refused(r, "--clock = '-1e20': Value error, a clock shift must be finite and within")


def test_an_unknown_mm_variable_far_from_any_setting_is_warned_about(tmp_path: Path) -> None:
    out = tmp_path / "a"
    r = cli("soak", "--feed", "synthetic-short", "--iterations", "1", "--iteration-minutes",
            "0.05", "--model-arms", "none", "-o", str(out), "--log-json",
            env={"MM_SOMETHING_ELSE": "1", "MM_BENCH_PIN": "0"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    warned = [json.loads(x) for x in r.stderr.splitlines() if "not an mm_sim setting" in x]
    assert [w["name"] for w in warned] == ["MM_SOMETHING_ELSE"]
