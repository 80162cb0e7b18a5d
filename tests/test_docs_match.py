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


def test_lobster_bad_line_rule(tmp_path: Path) -> None:
    """docs/FEEDS.md: a bad row skips message and book row; an execution without size or price
    is a bad line whose (valid) book row still applies."""
    from test_convert_lobster import ROWS, assert_book_follows_orderbook, write_pair

    from mm_sim.events import KIND_TRADE, open_feed
    from mm_sim.feeds.convert.base import ConvertOptions
    from mm_sim.feeds.convert.lobster import convert

    rows = list(ROWS)
    rows[3] = ("34202.0,4,2001,0,1000200,-1", rows[3][1])  # execution of size 0
    rows[6] = ("34205,3,1001,100", rows[6][1])  # 4 columns: the whole row is skipped
    msg, book = write_pair(tmp_path, rows)
    res = convert([msg, book], tmp_path / "out.npy", ConvertOptions())
    assert res.bad_lines.counts == {
        "message: execution needs size > 0 and price > 0": 1,
        "message: expected 6 columns": 1,
    }
    ev = open_feed(res.out).events
    assert_book_follows_orderbook(ev, [r for i, r in enumerate(rows) if i != 6])
    assert int((ev["kind"] == KIND_TRADE).sum()) == 2  # rows 2 and 5; row 3's trade dropped
    doc = " ".join((DOCS / "FEEDS.md").read_text().split())
    assert "message rows with fewer than 6 columns" in doc
    assert "an execution (type 4 or 5) whose size or price is not > 0" in doc


def test_binance_market_detected_from_on_a_spot_capture(tmp_path: Path) -> None:
    from binance_lines import gap_rows, write_hft

    from mm_sim.feeds.convert.base import ConvertOptions
    from mm_sim.feeds.convert.binance import convert

    res = convert([write_hft(tmp_path / "cap.txt", gap_rows())], tmp_path / "o.npy",
                  ConvertOptions())  # fmt: skip
    assert res.stats["market"] == "spot"
    assert res.stats["market_detected_from"] == "no 'pu' in any depthUpdate"
    assert "`no 'pu' in any depthUpdate` (spot)" in (DOCS / "FEEDS_BINANCE.md").read_text()


def test_every_metrics_line_field_has_a_row() -> None:
    from mm_sim.report.schema import IterationLine

    doc = (DOCS / "REPORTS.md").read_text().split("## 5. `metrics.jsonl`")[1].split("\n## ")[0]
    rows = set(re.findall(r"^\| `(\w+)` \|", doc, flags=re.M))
    assert rows == set(IterationLine.model_fields)
