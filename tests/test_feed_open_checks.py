"""Feeds the open-time checks refuse because a replay of them would give a verdict on nothing:
a book crossed at nearly every boundary (bid and ask swapped) and timestamps past 2100, where
the core's differences from its "never" time (-2^62 ns) overflow. Both were accepted before,
and a soak on them printed ``net_bps +nan`` and a verdict with exit 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mm_sim.errors import UserError
from mm_sim.events import KIND_DEPTH, KIND_SNAPSHOT, open_feed, write_feed
from mm_sim.feeds.validate import BOOK_CHECK_EVENTS, MAX_TS_NS, check_crossed_book, check_events

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, object, Path]:
    from mm_sim.feeds.synthetic import SyntheticParams, generate

    events, inst = generate(SyntheticParams(), seed=3, duration_s=20)
    return events, inst, tmp_path_factory.mktemp("feeds")


def _swapped(events: np.ndarray) -> np.ndarray:
    """Every book level on the other side: the book is crossed wherever it is two-sided."""
    e = events.copy()
    book = (e["kind"] == KIND_DEPTH) | (e["kind"] == KIND_SNAPSHOT)
    e["side"][book] *= -1
    return e


def mm(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mm_sim", *argv],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=600,
    )  # fmt: skip


def test_a_good_feed_passes_the_book_check(day) -> None:
    events, inst, _ = day
    assert check_crossed_book(events, inst.tick_size) is None


def test_a_swapped_book_is_found_and_counted(day) -> None:
    events, inst, _ = day
    f = check_crossed_book(_swapped(events), inst.tick_size)
    assert f is not None and f.fatal and f.code == "crossed_book"
    assert f.count > 0.95 * len(np.unique(events["exch_ts"])) / 2
    assert "crossed or locked" in f.message()


def test_stale_levels_after_a_hole_are_reported_not_refused(day) -> None:
    """Diffs missing for 6 s and no snapshot after: levels that should have gone stay and
    cross, but the strategy still quotes wherever the book is sound."""
    events, inst, _ = day
    t = events["exch_ts"] - events["exch_ts"][0]
    f = check_crossed_book(events[(t < 6e9) | (t >= 12e9)], inst.tick_size)
    assert f is not None and not f.fatal and "reported" in f.message()


def test_the_check_on_open_replays_a_prefix_and_says_so(day) -> None:
    events, inst, _ = day
    big = np.concatenate([_swapped(events)] * (BOOK_CHECK_EVENTS // len(events) + 2))
    big["exch_ts"] = events["exch_ts"][0] + np.arange(len(big)) * 1000
    big["local_ts"] = big["exch_ts"] + 1_000_000
    f = check_crossed_book(big, inst.tick_size)
    assert f is not None and f"in the first {BOOK_CHECK_EVENTS:,} events" in f.message()


def test_timestamps_after_2100_are_refused(day) -> None:
    events, _, _ = day
    late = events.copy()
    late["local_ts"][10] = MAX_TS_NS + 1
    found = {f.code: f for f in check_events(late)}
    assert found["ts_after_2100"].count == 1 and found["ts_after_2100"].first == 10
    assert "ts_after_2100" not in {f.code for f in check_events(events)}


def test_open_feed_refuses_a_crossed_feed_naming_it(day) -> None:
    events, inst, tmp = day
    p = write_feed(tmp / "swapped.npy", _swapped(events), inst)
    with pytest.raises(UserError, match=r"swapped\.npy: cannot replay this feed: .*crossed"):
        open_feed(p, check=True)
    open_feed(p, check=False)  # readers of the raw records still may


def test_soak_and_inspect_on_a_crossed_feed(day, tmp_path: Path) -> None:
    events, inst, tmp = day
    p = write_feed(tmp / "swapped_cli.npy", _swapped(events), inst)
    out = tmp_path / "art"
    r = mm("soak", "--feed", str(p), "--iterations", "1", "--iteration-minutes", "0.2",
           "--model-arms", "none", "--artifacts", str(out))  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("mm_sim")]
    assert len(errors) == 1 and "crossed or locked" in errors[0], r.stderr[-2000:]
    assert not (out / "reports").exists()  # no verdict
    r = mm("inspect", str(p), "--json")
    assert r.returncode == 1, r.stderr[-2000:]  # a feed a soak would refuse
    problems = {x["code"]: x for x in json.loads(r.stdout)["problems"]}
    assert problems["crossed_book"]["refused"] is True


def test_a_sidecar_price_decimals_out_of_range_is_refused(day) -> None:
    """The fake exchange formats prices with it: -3 killed its producer after it had started
    listening (a server with no data)."""
    events, inst, tmp = day
    p = write_feed(tmp / "decimals.npy", events, inst)
    side = p.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["instrument"]["price_decimals"] = -3
    side.write_text(json.dumps(meta))
    with pytest.raises(
        UserError, match=r"price_decimals must be an integer 0\.\.18 or null, got -3"
    ):
        open_feed(p)
