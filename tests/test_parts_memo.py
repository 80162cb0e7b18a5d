"""The report rebuild's memo of evaluated iterations (report/parts_memo.py): same parts as
evaluating afresh, evaluated once per distinct input, and read-only once kept."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mm_sim.report import parts_memo
from mm_sim.report.edge import iteration_parts, section
from tests.test_edge import simulate_run


def _same(a: object, b: object) -> None:
    for k, va in vars(a).items():
        vb = vars(b)[k]
        if isinstance(va, np.ndarray):  # bit for bit (NaN included)
            assert va.dtype == vb.dtype and va.tobytes() == vb.tobytes(), k
        elif isinstance(va, dict):
            assert va.keys() == vb.keys(), k
            for kk in va:
                x, y = np.asarray(va[kk]), np.asarray(vb[kk])
                assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), f"{k}[{kk}]"
        else:
            assert va == vb, k


def test_kept_parts_are_the_fresh_ones_and_evaluated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    slices = simulate_run(11, n_iter=3).slices()
    calls: list[int] = []

    def counting(sl):  # type: ignore[no-untyped-def]
        calls.append(sl.iteration)
        return iteration_parts(sl)

    monkeypatch.setattr(parts_memo, "iteration_parts", counting)
    monkeypatch.setattr(parts_memo, "_KEPT", type(parts_memo._KEPT)())
    first = parts_memo.parts_of(slices)
    assert calls == [0, 1, 2]
    for p, sl in zip(first, slices, strict=True):
        _same(p, iteration_parts(sl))
    again = parts_memo.parts_of(slices)
    assert calls == [0, 1, 2]  # nothing evaluated twice
    assert all(a is b for a, b in zip(first, again, strict=True))
    # the totals computed from kept parts are those of fresh parts
    fresh = [iteration_parts(sl) for sl in slices]
    assert section(again, None, 5.0) == section(fresh, None, 5.0)


def test_any_changed_input_is_evaluated_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts_memo, "_KEPT", type(parts_memo._KEPT)())
    sl = simulate_run(12, n_iter=1).slices()[0]
    p0 = parts_memo.parts_of([sl])[0]
    fills = sl.fills.copy()
    fills["qty"][0] *= 2.0
    changed = [
        replace(sl, fills=fills),
        replace(sl, marks=sl.marks[:-1]),
        replace(sl, ws_lag_p95_ms=1.0),
        replace(sl, iteration=7),
        replace(sl, start=None),
    ]
    for c in changed:
        p = parts_memo.parts_of([c])[0]
        assert p is not p0
        _same(p, iteration_parts(c))


def test_kept_arrays_cannot_be_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts_memo, "_KEPT", type(parts_memo._KEPT)())
    p = parts_memo.parts_of(simulate_run(13, n_iter=1).slices())[0]
    with pytest.raises(ValueError):
        p.notional[0] = 1.0
    with pytest.raises(ValueError):
        next(iter(p.markouts.values()))[0] = 1.0


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts_memo, "_KEPT", type(parts_memo._KEPT)())
    monkeypatch.setattr(parts_memo, "MAX_KEPT", 2)
    parts_memo.parts_of(simulate_run(14, n_iter=4).slices())
    assert len(parts_memo._KEPT) == 2


def test_iteration_sections_are_the_fresh_ones_evaluated_once_per_gates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runner's section of an ended iteration is the one every later rebuild shows: kept
    per (slice, gates), equal to a fresh evaluation, and each caller's copy is its own."""
    monkeypatch.setattr(parts_memo, "_KEPT", type(parts_memo._KEPT)())
    monkeypatch.setattr(parts_memo, "_SECTIONS", type(parts_memo._SECTIONS)())
    slices = simulate_run(13, n_iter=2).slices()
    calls: list[int | None] = []

    def counting(parts, iteration, threshold, rules=None):  # type: ignore[no-untyped-def]
        calls.append(iteration)
        return section(parts, iteration, threshold, rules)

    monkeypatch.setattr(parts_memo, "section", counting)
    keyed = parts_memo.keyed_parts(slices)
    first = parts_memo.iteration_sections(keyed, 5.0)
    assert calls == [0, 1]
    for sec, sl in zip(first, slices, strict=True):
        assert sec == section([iteration_parts(sl)], sl.iteration, 5.0)
    first[0].fills = -1  # a caller writing into its copy ...
    again = parts_memo.iteration_sections(parts_memo.keyed_parts(slices), 5.0)
    assert calls == [0, 1] and again[0].fills != -1  # ... changes nobody else's
    assert again[1] == first[1]
    # other gates are another evaluation
    parts_memo.iteration_sections(keyed, 7.5)
    assert calls == [0, 1, 0, 1]
