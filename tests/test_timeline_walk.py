"""The driver's walk over the timeline is the item sequence ``Timeline.items`` lists.

The two-clock driver makes its items one at a time from the timeline's cursors; the same
items written out as records (``Timeline.items``) and run by an engine that takes them as
they are must give the same records and state, on a feed out of exchange order, cut into
random slices, with output buffers that must grow and a checkpoint restored half-way.
"""

from __future__ import annotations

import numpy as np

from mm_sim.config import Overrides, load_profile
from mm_sim.core.engine import Engine
from mm_sim.core.timeline import ITEM_S, ITEM_SYNC, ITEM_V, Timeline
from mm_sim.feeds.spec import load_events, resolve_feed

KINDS = ("fills", "actions", "blocks", "marks")


def _late_feed() -> tuple[np.ndarray, object]:
    spec = resolve_feed("synthetic-short").model_copy(update={"duration_s": 240.0})
    events, instrument, _ = load_events(spec, 5)
    ev = np.array(events)
    # A tenth of the events happened up to 80 ms before an event received ahead of them (as a
    # capture's trades behind its depth diffs): the venue's order is not the feed's.
    rng = np.random.default_rng(2)
    late = rng.random(len(ev)) < 0.1
    ev["exch_ts"][late] -= rng.integers(0, 80_000_000, int(late.sum()))
    return ev, instrument


def test_the_driver_walks_the_items_the_timeline_lists() -> None:
    ev, instrument = _late_feed()
    profile = load_profile("S1")  # exchange order, the default
    walk = Engine(profile, Overrides(), instrument, 5, out_capacity=8)
    listed = Engine(profile, Overrides(), instrument, 5, out_capacity=8)
    timeline = Timeline(round(profile.matching.reorder_window_ms * 1e6), instrument.tick_size)
    listed._timeline = None  # runs the records Timeline.items writes, as they are
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.choice(np.arange(1, len(ev)), size=40, replace=False))
    parts = np.split(ev, cuts)
    got: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    want: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    flags: set[int] = set()
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if i == len(parts) // 2:  # a checkpoint restored into a fresh engine, mid-feed
            state = walk.state_arrays()
            assert len(state["tl_buf"]) > 0  # something is held across the cut
            walk = Engine(profile, Overrides(), instrument, 5, out_capacity=8)
            walk.load_state(state)
        items = timeline.items(part, final=last)
        flags.update(np.unique(items["kind"] & (ITEM_V | ITEM_S | ITEM_SYNC)).tolist())
        ra = walk.run(part, flush=last)
        rb = listed.run(items, flush=last)
        for k in KINDS:
            got[k].append(getattr(ra, k))
            want[k].append(getattr(rb, k))
    for k in KINDS:
        assert np.concatenate(got[k]).tobytes() == np.concatenate(want[k]).tobytes(), k
    assert sum(len(x) for x in got["fills"]) > 0
    assert len(np.concatenate(got["actions"])) > 8  # the output buffers grew
    assert {ITEM_V, ITEM_S | ITEM_SYNC} <= flags  # venue and strategy items both ran
    sa, sb = walk.state_arrays(), listed.state_arrays()
    assert all(np.array_equal(sa[k], sb[k]) for k in sb)
    assert walk._timeline is not None and walk._timeline.held == 0  # flushed at the end
