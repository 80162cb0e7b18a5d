"""``Engine.run_live`` (the live path's lean call) gives exactly what ``Engine.run`` gives."""

from __future__ import annotations

import numpy as np
import pytest

from mm_sim.config import MatchingCfg, Overrides, load_profile
from mm_sim.core.engine import Engine
from mm_sim.core.timeline import Timeline
from mm_sim.feeds.spec import load_events, resolve_feed


@pytest.mark.parametrize("order", ["file", "exchange"])
def test_run_live_matches_run_slice_by_slice(order: str) -> None:
    """In the exchange-order model ``run_live`` takes the live timeline (strategy items at once,
    venue items once no later event can precede them): ``run`` on those items gives the same."""
    spec = resolve_feed("synthetic-short").model_copy(update={"duration_s": 40.0})
    events, instrument, _ = load_events(spec, 3)
    events = np.array(events)
    base = load_profile("S1")
    profile = base.model_copy(update={"matching": MatchingCfg(event_order=order)})
    a = Engine(profile, Overrides(), instrument, 3, out_capacity=8)  # small: buffers must grow
    b = Engine(profile, Overrides(), instrument, 3, out_capacity=8)
    live = None
    if order == "exchange":
        live = Timeline(round(profile.matching.live_reorder_window_ms * 1e6), instrument.tick_size)
        a._timeline = None  # a runs the items the live timeline makes
    rng = np.random.default_rng(1)
    tail = int(len(events) * 0.8)  # small slices, then one big one that outgrows the buffers
    cuts = np.sort(rng.choice(np.arange(1, tail), size=tail // 6, replace=False))
    cuts = np.append(cuts, tail)
    got: dict[str, list[np.ndarray]] = {k: [] for k in ("fills", "actions", "blocks", "marks")}
    want: dict[str, list[np.ndarray]] = {k: [] for k in got}
    for i, part in enumerate(np.split(events, cuts)):
        if i == len(cuts) // 2:  # a hot-swap in between
            o = Overrides(min_interval_ms=40.0)
            a.set_overrides(o)
            b.set_overrides(o)
        ra = a.run(part if live is None else live.items(part, final=False, live=True))
        if i % 3 == 1:  # read-only: copied, not read through the entry point as if writeable
            part = part.copy()
            part.flags.writeable = False
        elif i % 3 == 2 and len(part) > 1:  # strided: copied too
            part = np.repeat(part, 2)[::2]
        counts = b.run_live(part)
        rb = b.live_result()
        assert counts.tolist() == [len(ra.fills), len(ra.actions), len(ra.blocks), len(ra.marks)]
        for k in got:
            want[k].append(getattr(ra, k))
            got[k].append(getattr(rb, k))
    for k in got:
        assert np.concatenate(got[k]).tobytes() == np.concatenate(want[k]).tobytes(), k
    assert sum(len(x) for x in got["fills"]) > 0
    assert len(want["actions"][-1]) > 32  # the last call grew the output buffers
    sa, sb = a.state_arrays(), b.state_arrays()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    if live is not None:
        assert b._timeline is not None and b._timeline.held == 0  # strategy items never wait


def test_run_live_rejects_other_records() -> None:
    spec = resolve_feed("synthetic-short").model_copy(update={"duration_s": 5.0})
    _, instrument, _ = load_events(spec, 3)
    e = Engine(load_profile("S1"), Overrides(), instrument, 3)
    other = np.zeros(3, dtype=[("price", "f8"), ("qty", "f8")])
    with pytest.raises(TypeError, match="EVENT_DTYPE"):
        e.run_live(other)
