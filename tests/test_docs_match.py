"""Claims in the docs that a reader acts on, checked against the code that makes them true."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mm_sim.config import Profile, RunSettings
from mm_sim.configdoc import render, unit_of

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def _paths(model: type, prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            out += _paths(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_config_units_read_whole_words() -> None:
    assert unit_of("iterations") == ""  # "ratio" is inside "iteration"; it is no fraction
    assert unit_of("iteration_minutes") == "min"
    assert unit_of("gates.hard.cancel_ratio_max") == "fraction"
    assert unit_of("replace_rate_per_min") == "1/min"
    for name in _paths(Profile):
        if name.startswith("gates.bands.") or "p95" in name:
            assert unit_of(name) in ("bps", "ms"), name


def test_config_doc_puts_each_field_in_its_own_table() -> None:
    doc = render()
    profile = doc.split("## Profile")[1].split("## Runtime overrides")[0]
    top = profile.split("\n### ")[0]
    assert "| `mark_interval_ms` |" in top  # not under the last sub-section's heading
    for section in profile.split("\n### ")[1:]:
        name = section.split("`")[1]
        assert " — read by \n" not in section and not section.split("\n")[0].endswith("by ")
        for row in re.findall(r"^\| `([\w.]+)` \|", section, flags=re.M):
            assert row.startswith(name + "."), (row, name)
    runs = doc.split("## Run settings")[1]
    assert all(f"| `{n}` |" in runs for n in RunSettings.model_fields)


def test_synthetic_tick_in_bp_is_computed() -> None:
    params = json.loads((REPO / "feeds" / "synthetic.json").read_text())["params"]
    tick_bp = params["tick_size"] / params["initial_price"] * 1e4
    doc = (DOCS / "SYNTHETIC.md").read_text()
    said = re.search(r"A tick is about ([\d.]+) bp, so a maker quoting ([\d.]+) bp from\s+the "
                     r"mid sits about (\d+) ticks away", doc)  # fmt: skip
    assert said, "docs/SYNTHETIC.md: the tick sentence moved"
    assert float(said[1]) == round(tick_bp, 3)
    assert int(said[3]) == round(float(said[2]) / tick_bp)
