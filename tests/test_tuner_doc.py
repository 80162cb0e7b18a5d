"""docs/TUNER.md agrees with the code: its generated tables, and the thresholds its prose names."""

from __future__ import annotations

import dataclasses

from mm_sim.runtime.tuner import POLICY_DOC, TunerPolicy
from mm_sim.tuning.doc import DOC, current, render
from mm_sim.tuning.search import STEPS


def test_generated_block_matches_the_code() -> None:
    text = DOC.read_text()
    assert current(text) == render(), "run `python -m mm_sim.tuning.doc` to regenerate"
    assert {f.name for f in dataclasses.fields(TunerPolicy)} == set(POLICY_DOC)


def test_the_prose_names_the_policy_values() -> None:
    text = " ".join(DOC.read_text().split())
    p = TunerPolicy()
    for phrase in (
        f"adverse cost p95 above {p.adverse_p95_trigger:g} bps",
        f"order-age p95 above {p.order_age_p95_trigger_ms:g} ms",
        f"above {p.block_ratio_limit:.0%} of attempts".replace("%", " %"),
        "net_bps < 0 for two *consecutive* iterations"
        if p.fallback_after == 2
        else "fallback_after",
        f"by at most +{p.max_spread_step:.2f} per iteration",
        f"net_bps ≥ {p.ok_band_bps:g}",
        f"below −{-p.emergency_net_bps:g} bps over {p.emergency_min_fills}+ fills",
        "a field changes at most twice" if p.max_changes_per_field == 2 else "max_changes",
        f"moves by {STEPS['base_spread_bps_delta']:g} at most",
    ):
        assert phrase in text, phrase
