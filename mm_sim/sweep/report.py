"""SWEEP_REPORT.md, its heat map, and best_cell.json — all computed from the result rows.

"Most influential fields": for each swept field, the median (over the cells having that value)
of the cells' in-sample median net_bps, per value; a field's influence is the variance of those
per-value medians — how far the edge moves when that field moves, the others averaged out by the
median. The two most influential fields are the heat map's axes; each square is the median, over
the cells with that pair of values, of their in-sample median net_bps.

Noise: every run's EDGE_REPORT.json carries a block-bootstrap interval of its net_bps
(docs/REPORTS.md). A cell's noise is the median, over its training feeds, of those intervals'
half-widths, in bps, and its score is read as score ± noise. A cell whose interval overlaps the
best cell's is statistically indistinguishable from it ("≈ best"): the best cell is then best
by its point score, not by itself, and the report says so. The ranking itself stays the
criterion's (point score, then grid order); the noise is reported, not used to reorder.

Like the soak's reports, nothing here reads a clock: the same rows give the same bytes.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.config import Overrides, Profile
from mm_sim.events import atomic_write_bytes, atomic_write_json
from mm_sim.sweep.grid import Axis, Cell, Grid, get_path
from mm_sim.sweep.select import CellScore, Criterion, FeedSummary, Validation

REPORT = "SWEEP_REPORT.md"
HEATMAP = "sweep_heatmap.png"
BEST_CELL = "best_cell.json"
BEST_PROFILE = "best_profile.json"


@dataclass(frozen=True)
class Influence:
    key: str
    per_value: tuple[tuple[Any, float], ...]  # (value, median of the cells' median net_bps)
    variance: float


@dataclass(frozen=True)
class SweepInfo:
    """What the report says about how the sweep was run."""

    grid: Grid
    train: Sequence[str]
    test: Sequence[str]
    iterations: int
    iteration_minutes: float
    profile_name: str
    overrides_source: str
    criterion: Criterion
    rows: int  # rows of the current grid's cells on the current feeds
    stale_rows: int  # rows in the file for cells or feeds no longer swept (kept, not used)
    iterations_run: tuple[int, ...]  # distinct iterations committed per run, over those rows
    all_fail: bool  # every training row of every scored cell has the verdict FAIL
    engine: str
    # "LABEL: what the run did not get" per stored feed that ends before the run (cut there).
    cut_feeds: tuple[str, ...] = ()


@dataclass(frozen=True)
class CellNoise:
    """A cell's statistical noise, from its runs' net_bps intervals."""

    per_feed: dict[str, tuple[float, float]]  # feed label -> (lo, hi) of the run's net_bps
    noise_bps: float | None  # median half-width over the training feeds; None if any lacks one


def _run_edges(out_dir: Path, cell_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(feed label, EDGE_REPORT.json) of each of a cell's runs kept under
    ``out_dir/runs/<cell_id>/`` (the label read from the run's run.json)."""
    base = Path(out_dir) / "runs" / cell_id
    if not base.is_dir():
        return
    for run in sorted(base.iterdir()):
        run_json, edge_json = run / "soak" / "run.json", run / "reports" / "EDGE_REPORT.json"
        if not (run_json.is_file() and edge_json.is_file()):
            continue
        try:
            label = json.loads(run_json.read_text())["settings"]["feed"]
            edge = json.loads(edge_json.read_text())
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(label, str) and isinstance(edge, dict):
            yield label, edge


def run_intervals(out_dir: Path, cell_id: str) -> dict[str, tuple[float, float]]:
    """The net_bps interval of each of a cell's runs, by feed label; runs without an interval
    are left out."""
    out: dict[str, tuple[float, float]] = {}
    for label, edge in _run_edges(out_dir, cell_id):
        st = edge.get("error_bars", {}).get("statistical")
        net = (st or {}).get("figures", {}).get("net_bps") or {}
        if net.get("lo") is not None and net.get("hi") is not None:
            out[label] = (float(net["lo"]), float(net["hi"]))
    return out


def run_model_bands(out_dir: Path, cell_id: str) -> dict[str, tuple[float, float]]:
    """The model error bar (net_bps over the fill-model arms, docs/REPORTS.md) of each of a
    cell's runs that ran model arms (the held-out runs of the top cells), by feed label."""
    out: dict[str, tuple[float, float]] = {}
    for label, edge in _run_edges(out_dir, cell_id):
        model = edge.get("error_bars", {}).get("model")
        if model and model.get("lo") is not None and model.get("hi") is not None:
            out[label] = (float(model["lo"]), float(model["hi"]))
    return out


def cell_noise(
    out_dir: Path, scores: Sequence[CellScore], train: Sequence[str]
) -> dict[str, CellNoise]:
    """Noise of every scored cell over the training feeds (see the module docstring)."""
    out = {}
    for s in scores:
        per_feed = run_intervals(out_dir, s.cell.id)
        halves = [(per_feed[f][1] - per_feed[f][0]) / 2 for f in train if f in per_feed]
        noise = statistics.median(halves) if halves and len(halves) == len(train) else None
        out[s.cell.id] = CellNoise(per_feed, noise)
    return out


def tied_with_best(ranked: Sequence[CellScore], noise: dict[str, CellNoise]) -> list[str] | None:
    """Ids of the cells whose score ± noise overlaps the best's (best excluded; cells of unknown
    noise are not among them, see ``unknown_noise``); None when the best's noise is unknown."""
    if not ranked:
        return []
    nb = noise.get(ranked[0].cell.id)
    if nb is None or nb.noise_bps is None:
        return None
    lo_best = ranked[0].score - nb.noise_bps
    tied = []
    for s in ranked[1:]:
        n = noise.get(s.cell.id)
        if n is not None and n.noise_bps is not None and s.score + n.noise_bps >= lo_best:
            tied.append(s.cell.id)
    return tied


def unknown_noise(ranked: Sequence[CellScore], noise: dict[str, CellNoise]) -> list[str]:
    """Cells (best excluded) with a training run lacking an interval: they cannot be told apart
    from the best or not, so the report lists them."""
    out = []
    for s in ranked[1:]:
        n = noise.get(s.cell.id)
        if n is None or n.noise_bps is None:
            out.append(s.cell.id)
    return out


def _fmt(v: Any, d: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        return f"{v:+.{d}f}"
    return str(v)


def _val(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def influences(grid: Grid, ranked: Sequence[CellScore]) -> list[Influence]:
    """Swept fields (two values or more) by influence on net_bps, largest first."""
    med = {s.cell.id: s.train.median_net_bps for s in ranked}
    out = []
    for axis_no, axis in enumerate(grid.axes):
        if len(axis.values) < 2:
            continue
        per_value = []
        for v in axis.values:
            xs = [med[c.id] for c in grid.cells if c.id in med and c.values[axis_no][1] == v]
            if xs:
                per_value.append((v, statistics.median(xs)))
        var = statistics.pvariance([m for _, m in per_value]) if len(per_value) > 1 else 0.0
        out.append(Influence(axis.key, tuple(per_value), var))
    order = {a.key: i for i, a in enumerate(grid.axes)}
    out.sort(key=lambda x: (-x.variance, order[x.key]))
    return out


def _axis(grid: Grid, key: str) -> tuple[int, Axis]:
    for i, a in enumerate(grid.axes):
        if a.key == key:
            return i, a
    raise KeyError(key)


def heatmap_matrix(
    grid: Grid, ranked: Sequence[CellScore], x_key: str | None, y_key: str | None
) -> np.ndarray:
    """[y, x] = median of the in-sample median net_bps of the cells with those two values."""
    med = {s.cell.id: s.train.median_net_bps for s in ranked}
    xi, xa = _axis(grid, x_key) if x_key else (None, None)
    yi, ya = _axis(grid, y_key) if y_key else (None, None)
    xs = xa.values if xa else (None,)
    ys = ya.values if ya else (None,)
    m = np.full((len(ys), len(xs)), np.nan)
    for r, yv in enumerate(ys):
        for c, xv in enumerate(xs):
            vals = [
                med[cell.id]
                for cell in grid.cells
                if cell.id in med
                and (xi is None or cell.values[xi][1] == xv)
                and (yi is None or cell.values[yi][1] == yv)
            ]
            if vals:
                m[r, c] = statistics.median(vals)
    return m


def colour_limits(values: np.ndarray, gate: float) -> tuple[float, float]:
    """The colour scale's ends, symmetric about the net_bps gate: a cell at the gate is the
    middle colour, every failing cell is on the red half (centred on zero, cells that all
    fail the gate were drawn green)."""
    finite = values[np.isfinite(values)]
    half = float(np.max(np.abs(finite - gate))) if finite.size else 1.0
    half = half if half > 0 else 1.0
    return gate - half, gate + half


def render_heatmap(
    grid: Grid,
    ranked: Sequence[CellScore],
    infl: Sequence[Influence],
    best: Cell | None,
    gate: float,
) -> bytes:
    """``gate``: the hard gate's net_bps minimum (profile.gates.hard.net_bps_min).

    matplotlib is imported here, not with the module: it is 0.45 s that ``mm_sim --help``
    and every sweep command's start paid before, and only the report draws."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    x_key = infl[0].key if infl else None
    y_key = infl[1].key if len(infl) > 1 else None
    m = heatmap_matrix(grid, ranked, x_key, y_key)
    fig = Figure(figsize=(max(6.5, 2.5 + 0.9 * m.shape[1]), max(3.2, 1.8 + 0.6 * m.shape[0])))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = colour_limits(m, gate)
    im = ax.imshow(m, cmap="RdYlGn", vmin=lo, vmax=hi, aspect="auto", origin="lower")
    bar = fig.colorbar(im, ax=ax, label="net_bps, median over training feeds")
    bar.ax.axhline(gate, color="black", lw=1.2)
    bar.ax.text(1.05, gate, f" gate {gate:g}", transform=bar.ax.get_yaxis_transform(),
                va="center", ha="left", fontsize=7, clip_on=False)  # fmt: skip
    xs = _axis(grid, x_key)[1].values if x_key else ("all",)
    ys = _axis(grid, y_key)[1].values if y_key else ("all",)
    ax.set_xticks(range(len(xs)), [_val(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_val(v) for v in ys])
    ax.set_xlabel(x_key or "(no field varies)")
    ax.set_ylabel(y_key or "")
    for r in range(m.shape[0]):
        for c in range(m.shape[1]):
            if np.isfinite(m[r, c]):
                ax.text(c, r, f"{m[r, c]:+.2f}", ha="center", va="center", fontsize=8)
    if best is not None:
        vals = best.as_dict()
        c = xs.index(vals[x_key]) if x_key else 0
        r = ys.index(vals[y_key]) if y_key else 0
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, lw=2.5, ec="black"))
    ax.set_title(heatmap_title(x_key, y_key, gate), fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def heatmap_title(x_key: str | None, y_key: str | None, gate: float) -> str:
    """What the map shows, in two short lines (the figure may be only 6.5 in wide)."""
    if x_key and y_key:
        what = f"by {x_key} and {y_key}"
    elif x_key:
        what = f"by {x_key}"
    else:
        what = "(no field varies)"
    return (
        f"Median net_bps {what}\n"
        f"red below the {gate:g} bps gate (net_bps_min), green above; best cell boxed"
    )


def best_overrides_json(cell: Cell, base: Overrides) -> dict[str, float]:
    """The six fields as floats, as the soak writes its runtime_overrides.json."""
    return cell.overrides(base).as_dict()


def write_best(out_dir: Path, cell: Cell, base_o: Overrides, base_p: Profile) -> list[Path]:
    written = [out_dir / BEST_CELL]
    atomic_write_json(written[0], best_overrides_json(cell, base_o))
    if any(k.startswith("profile.") for k, _ in cell.values):
        prof = cell.profile(base_p).model_dump(mode="json")
        prof["description"] = f"{base_p.name} with sweep cell {cell.id}: {cell.label()}"
        written.append(out_dir / BEST_PROFILE)
        atomic_write_json(written[1], prof)
    return written


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _summary_cells(s: FeedSummary | None) -> list[str]:
    if s is None:
        return ["—", "—", "—"]
    return [_fmt(s.median_net_bps), f"{s.mad_bps:.3f}", " ".join(s.verdicts)]


def render_markdown(
    info: SweepInfo,
    ranked: Sequence[CellScore],
    top: Sequence[Validation],
    infl: Sequence[Influence],
    base_o: Overrides,
    base_p: Profile,
    noise: dict[str, CellNoise] | None = None,
    bands: dict[str, tuple[float, float]] | None = None,
) -> str:
    """``bands``: the best cell's model error bar per feed (``run_model_bands``)."""
    g = info.grid
    bands = bands or {}
    best = ranked[0] if ranked else None
    noise = noise or {}
    L = [
        "# Sweep report",
        "",
        f"Grid `{g.path}`: {len(g.cells)} cells over {len(g.axes)} field(s) "
        f"({', '.join(f'`{a.key}` ×{len(a.values)}' for a in g.axes)}). Every cell ran on every "
        f"training feed; the top {len(top)} also ran on the test feeds. Each run: the soak's "
        f"runner with the tuner off, {info.iterations} × {info.iteration_minutes:g} simulated "
        f"minutes, profile {info.profile_name}, base overrides {info.overrides_source}, seed = "
        f"the feed's @SEED. Engine: {info.engine}. Rows: {info.rows} in `sweep_results.csv`"
        + (
            f" ({info.stale_rows} more, of cells or feeds no longer in the sweep, ignored)"
            if info.stale_rows
            else ""
        )
        + "; iterations committed per run (`iterations_run`): "
        + (", ".join(str(n) for n in info.iterations_run) or "—")
        + ".",
        "",
        f"- training feeds: {', '.join(f'`{f}`' for f in info.train)}",
        f"- test feeds: {', '.join(f'`{f}`' for f in info.test) or '— (none: out-of-sample not measured; use --train/--test)'}",  # noqa: E501
        *(
            f"- **cut short**: `{note.split(': ', 1)[0]}`: {note.split(': ', 1)[1]} — every run"
            " on it is partial (column `partial`)"
            for note in info.cut_feeds
        ),
        "",
        "## Criterion",
        "",
        info.criterion.describe() + ". Ties go to the earlier cell in the grid.",
        "",
        "Noise: each run's net_bps has a 95 % block-bootstrap interval (its EDGE_REPORT.json, "
        "docs/REPORTS.md); a cell's noise is the median over the training feeds of those "
        "intervals' half-widths, and its score reads score ± noise. Cells whose score ± noise "
        "overlaps the best cell's are statistically indistinguishable from it (marked ≈ best). "
        "The ranking is not changed by the noise: among indistinguishable cells the best is "
        "the higher point score, then the earlier cell in the grid — a choice by rule, not by "
        "evidence.",
        "",
    ]
    if best is None:
        return "\n".join([*L, "No cell has a result on every training feed yet.", ""])
    cell = best.cell
    files = f"`{BEST_CELL}`" + (
        f" and `{BEST_PROFILE}`" if any(k.startswith("profile.") for k, _ in cell.values) else ""
    )
    base_vals: dict[str, Any] = {f"overrides.{k}": v for k, v in base_o.as_dict().items()}
    base_dump = base_p.model_dump(mode="json")
    for key, _ in cell.values:
        if key.startswith("profile."):
            base_vals[key] = get_path(base_dump, key.split(".")[1:])
    oos = top[0].test if top else None
    if info.all_fail:
        L += [
            "**Warning:** every cell's verdict is FAIL on every training feed: the best cell is "
            "the least bad of the grid, not one that passes the gate. Widen the grid or look at "
            "the edge breakdown of a run before using it.",
            "",
        ]
    L += [
        f"## Best cell `{cell.id}`",
        "",
        *_noise_verdict(ranked, noise),
        f"score {_fmt(best.score)}{_pm(noise.get(cell.id))} · in-sample median net_bps "
        f"{_fmt(best.train.median_net_bps)} (MAD {best.train.mad_bps:.3f}, "
        f"{best.train.gate_failures:.2f} failed hard gates per feed, net_bps_total not counted) "
        "· out-of-sample median "
        f"net_bps {_fmt(oos.median_net_bps) if oos else '—'}",
        "",
        *_table(
            ["field", "best", "base"],
            [[f"`{k}`", _val(v), _val(base_vals.get(k, "—"))] for k, v in cell.values],
        ),
        "",
        f"Written to {files}: `python -m mm_sim soak --overrides {BEST_CELL}`"
        + (f" `--profile {BEST_PROFILE}`" if BEST_PROFILE in files else "")
        + " (paths relative to this directory).",
        "",
        "Per feed:",
        "",
        *_table(
            ["feed", "split", "net_bps", "95 % interval", "fill-model band", "verdict"],
            [
                [f"`{f}`", "train", _fmt(n), _iv(noise.get(cell.id), f), _band(bands, f), v]
                for f, n, v in zip(info.train, best.train.net_bps, best.train.verdicts, strict=True)
            ]
            + (
                [
                    [f"`{f}`", "test", _fmt(n), _iv(noise.get(cell.id), f), _band(bands, f), v]
                    for f, n, v in zip(info.test, oos.net_bps, oos.verdicts, strict=True)
                ]
                if oos
                else []
            ),
        ),
        "The fill-model band is net_bps under each fill-model rule flipped (model arms of the "
        "held-out runs, `sweep --model-arms`; docs/REPORTS.md): how much of the result rests "
        "on the simulated venue's rules rather than on the cell.",
        "",
        "",
        f"## Top {len(top)}: in-sample vs out-of-sample net_bps",
        "",
        "A large negative gap (test − train) means the cell's in-sample edge was fitted to the "
        "training days.",
        "",
    ]
    rows = []
    tied = set(tied_with_best(ranked, noise) or ())
    for v in top:
        s = v.scored
        mark = " ≈ best" if s.cell.id in tied else ""
        rows.append(
            [
                str(v.rank),
                f"`{s.cell.id}`",
                s.cell.label(),
                _fmt(s.score) + _pm(noise.get(s.cell.id)) + mark,
                *_summary_cells(s.train)[:2],
                f"{s.train.gate_failures:.2f}",
                *_summary_cells(v.test),
                _fmt(v.gap_bps),
            ]
        )
    L += _table(
        [
            "rank",
            "cell",
            "values",
            "score",
            "train median",
            "train MAD",
            "gate fails/feed (excl. net_bps_total)",
            "test median",
            "test MAD",
            "test verdicts",
            "test − train",
        ],
        rows,
    )
    L += ["", "## Field influence", ""]
    if infl:
        L += [
            "Variance of the per-value medians of the cells' in-sample median net_bps "
            "(larger = the field moves the edge more).",
            "",
            *_table(
                ["field", "variance", "median net_bps per value"],
                [
                    [
                        f"`{i.key}`",
                        f"{i.variance:.4f}",
                        ", ".join(f"{_val(v)}: {m:+.3f}" for v, m in i.per_value),
                    ]
                    for i in infl
                ],
            ),
        ]
    else:
        L.append("No field takes two values or more.")
    axes = " × ".join(f"`{i.key}`" for i in infl[:2]) or "no varying field"
    L += ["", f"## Heat map ({axes})", "", f"![net_bps heat map]({HEATMAP})", ""]
    base_cell = _base_cell(g, base_vals)
    if base_cell is not None:
        rank = next((i + 1 for i, s in enumerate(ranked) if s.cell.id == base_cell.id), None)
        sc = next((s for s in ranked if s.cell.id == base_cell.id), None)
        if sc is not None:
            L += [
                "## Base values",
                "",
                f"The base values are cell `{base_cell.id}`: rank {rank} of {len(ranked)}, "
                f"score {_fmt(sc.score)}, in-sample median net_bps "
                f"{_fmt(sc.train.median_net_bps)}.",
                "",
            ]
    return "\n".join(L)


def _band(bands: dict[str, tuple[float, float]], feed: str) -> str:
    lo_hi = bands.get(feed)
    return "—" if lo_hi is None else f"[{lo_hi[0]:+.3f}, {lo_hi[1]:+.3f}]"


def _pm(n: CellNoise | None) -> str:
    return f" ± {n.noise_bps:.3f}" if n is not None and n.noise_bps is not None else ""


def _iv(n: CellNoise | None, feed: str) -> str:
    if n is None or feed not in n.per_feed:
        return "—"
    lo, hi = n.per_feed[feed]
    return f"[{lo:+.3f}, {hi:+.3f}]"


def _noise_verdict(ranked: Sequence[CellScore], noise: dict[str, CellNoise]) -> list[str]:
    """Is the best cell best by itself, or statistically tied with others?"""
    tied = tied_with_best(ranked, noise)
    if tied is None:
        return [
            "Noise: unknown for this cell (a training run has no net_bps interval: too few "
            "fills, or written before intervals existed): it is best by point score only.",
            "",
        ]
    if len(ranked) < 2:
        return []
    unknown = unknown_noise(ranked, noise)
    tail = (
        f" {len(unknown)} cell(s) have no interval on some training feed and cannot be "
        f"compared: {_ids(unknown)}."
        if unknown
        else ""
    )
    if not tied:
        return [
            "Best by itself: its score ± noise does not overlap any other cell's with a known "
            f"noise (lead over `{ranked[1].cell.id}`: {ranked[0].score - ranked[1].score:+.3f} "
            f"bps).{tail}",
            "",
        ]
    lead = ranked[0].score - next(s.score for s in ranked if s.cell.id == tied[0])
    return [
        f"**Not best by itself:** its lead over `{tied[0]}` ({lead:+.3f} bps) is inside the "
        f"noise; {len(tied)} cell(s) are statistically indistinguishable from it: "
        f"{_ids(tied)}. It is chosen by its point score (then grid order); treat the tied "
        f"cells as equally good candidates.{tail}",
        "",
    ]


def _ids(ids: Sequence[str]) -> str:
    return ", ".join(f"`{c}`" for c in ids[:10]) + (" ..." if len(ids) > 10 else "")


def _base_cell(grid: Grid, base_vals: dict[str, Any]) -> Cell | None:
    for c in grid.cells:
        if all(k in base_vals and base_vals[k] == v for k, v in c.values):
            return c
    return None


def write_report(
    out_dir: Path,
    info: SweepInfo,
    ranked: Sequence[CellScore],
    top: Sequence[Validation],
    base_o: Overrides,
    base_p: Profile,
) -> list[Path]:
    """Write SWEEP_REPORT.md, the heat map and (with a best cell) best_cell.json."""
    infl = influences(info.grid, ranked)
    best = ranked[0].cell if ranked else None
    written = []
    png = render_heatmap(info.grid, ranked, infl, best, base_p.gates.hard.net_bps_min)
    atomic_write_bytes(out_dir / HEATMAP, png)
    written.append(out_dir / HEATMAP)
    noise = cell_noise(out_dir, [*ranked], info.train)
    bands = run_model_bands(out_dir, best.id) if best is not None else {}
    md = render_markdown(info, ranked, top, infl, base_o, base_p, noise, bands)
    atomic_write_bytes(out_dir / REPORT, md.encode())
    written.append(out_dir / REPORT)
    if best is not None:
        written += write_best(out_dir, best, base_o, base_p)
    return written
