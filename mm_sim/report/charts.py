"""The run's PNG charts, drawn from its committed records and metrics lines.

What a reader needs to place a chart against the run: the time axis is UTC wall time for a
recorded or live feed (the hours a trader remembers) and elapsed time for the synthetic market;
iteration boundaries are drawn and labelled with the iteration numbers the reports use; every
override change (tuner between iterations, emergency rule or operator mid-iteration) is marked
on the PnL and spread charts; money and quantities are labelled in the instrument's currencies.
Charts use matplotlib's object API on an Agg canvas (no global backend state) and no version
stamp, so rebuilding gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import numpy as np
from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mm_sim.config import Profile
from mm_sim.core.records import BLOCK_REASONS, MARK_DTYPE
from mm_sim.report.currency import Currencies, currencies
from mm_sim.report.edge import BPS
from mm_sim.report.schema import EdgeSection, IterationLine, RunConfig

CHARTS = {
    "pnl": ("pnl.png", "Cumulative PnL and net_bps per iteration"),
    "inventory": ("inventory.png", "Inventory over time"),
    "quoted_spread": ("quoted_spread.png", "Our quotes around the mid (bps)"),
    "blocks": ("blocks.png", "Block reasons per iteration"),
}
# A line is drawn from its min/max envelope over this many equal columns of the time axis, four
# per pixel of a 10-inch figure at 100 dpi: every spike and gap of the full series stays (a
# stride would drop them), the picture's difference from the full series' is half a stride's
# of as many points (tests/test_chart_envelope.py), and a chart costs the same for a minute or a
# month of marks.
ENVELOPE_COLUMNS = 4000
NS_PER_DAY = 86_400e9
# How each kind of override change is drawn: (label, colour, line style).
CHANGE_STYLE = {
    "tuner": ("tuner change", "tab:blue", "--"),
    "emergency": ("emergency change", "tab:red", "-"),
    "operator": ("operator change", "tab:purple", "-."),
}


def png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def envelope(x: np.ndarray, y: np.ndarray, columns: int = ENVELOPE_COLUMNS) -> tuple[Any, Any]:
    """The points of ``(x, y)`` (x ascending) that a plot needs at ``columns`` equal columns
    of its x range (``envelope_by``); series no longer than four points a column are returned
    as they are."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) <= 4 * columns:
        return x, y
    span = x[-1] - x[0]
    scale = columns / span if span > 0 else 0.0
    return envelope_by(x, y, np.minimum(((x - x[0]) * scale).astype(np.int64), columns - 1))


def envelope_by(x: np.ndarray, y: np.ndarray, col: np.ndarray) -> tuple[Any, Any]:
    """In each column (``col``, non-decreasing, one per point) of each finite stretch of ``y``,
    its first, lowest, highest and last point, in order. A gap (NaN in y) stays a gap:
    stretches are joined by a NaN, as matplotlib breaks a line there."""
    idx = np.flatnonzero(np.isfinite(y))
    if not len(idx):
        return x[:0], y[:0]
    col = col[idx]
    gap = np.diff(idx) != 1  # a NaN between two finite points
    start = np.r_[True, (np.diff(col) != 0) | gap]
    group = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    last = np.r_[first[1:] - 1, len(idx) - 1]
    v = y[idx]
    order = np.lexsort((v, group))  # by group, then value: a group's min first, max last
    keep = np.unique(np.concatenate([first, last, order[first], order[last]]))
    xs, ys = x[idx[keep]], v[keep]
    # a gap always ends a group and starts the next, and both ends are kept: adjacent in keep
    breaks = np.flatnonzero(gap[keep[1:] - 1])
    if len(breaks):
        xs = np.insert(xs, breaks + 1, np.nan)
        ys = np.insert(ys, breaks + 1, np.nan)
    return xs, ys


@dataclass(frozen=True)
class TimeAxis:
    """Maps record timestamps (ns) to x values, and labels the axis it drew on."""

    label: str
    x: Callable[[Any], Any]
    utc: bool

    def style(self, ax: Any) -> None:
        if self.utc:
            locator = mdates.AutoDateLocator(tz=UTC)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
        ax.set_xlabel(self.label)


def time_axis(t0: int, t1: int, real_time: bool) -> TimeAxis:
    """UTC dates for real data (matplotlib's date numbers: days since 1970-01-01), elapsed
    s/min/h from the first mark for the synthetic market (its dates are made up)."""
    if real_time:
        return TimeAxis(
            "time (UTC)", lambda ts: np.asarray(ts, dtype=np.float64) / NS_PER_DAY, True
        )
    span_s = (t1 - t0) / 1e9
    unit, per = ("s", 1e9) if span_s < 120 else ("min", 60e9) if span_s < 7200 else ("h", 3.6e12)
    return TimeAxis(
        f"simulated time ({unit})", lambda ts: (np.asarray(ts, dtype=np.int64) - t0) / per, False
    )


@dataclass(frozen=True)
class Change:
    ts: int
    kind: str  # key of CHANGE_STYLE
    text: str


def override_changes(lines: Sequence[IterationLine], ends: dict[int, int]) -> list[Change]:
    """Every override change of the run, at the time it took effect: a decision taken at a
    boundary (no ``sim_ts``) at the end of its iteration."""
    out: list[Change] = []
    for line in lines:
        for d in line.decisions:
            if d.field is None or d.new is None:
                continue  # HOLD: nothing changed
            ts = d.sim_ts if d.sim_ts is not None else ends.get(line.iteration)
            if ts is None:
                continue
            kind = d.driver if d.driver in ("emergency", "operator") else "tuner"
            out.append(Change(int(ts), kind, f"{d.field} {d.old:g} -> {d.new:g}"))
    return out


class _Context:
    """What every time chart shares: the axis, the iteration boundaries and the changes."""

    def __init__(
        self,
        marks_by_iter: Sequence[np.ndarray],
        iters: Sequence[EdgeSection],
        lines: Sequence[IterationLine],
        real_time: bool,
    ) -> None:
        marks = np.concatenate(list(marks_by_iter)) if marks_by_iter else np.empty(0, MARK_DTYPE)
        self.marks = marks
        t0 = int(marks["ts"][0]) if len(marks) else 0
        t1 = int(marks["ts"][-1]) if len(marks) else 0
        self.axis = time_axis(t0, t1, real_time)
        self.m = marks
        self.tx = np.asarray(self.axis.x(marks["ts"]), dtype=np.float64)
        numbers = [s.iteration if s.iteration is not None else k for k, s in enumerate(iters)]
        self.starts = [
            (n, int(x["ts"][0])) for n, x in zip(numbers, marks_by_iter, strict=False) if len(x)
        ]
        ends = {n: int(x["ts"][-1]) for n, x in zip(numbers, marks_by_iter, strict=False) if len(x)}
        self.changes = override_changes(lines, ends)

    def line(self, ax: Any, y: np.ndarray, **style: Any) -> None:
        """``y`` (one value per mark) over time, drawn from its envelope (``envelope``)."""
        ax.plot(*envelope(self.tx, y), **style)

    def iterations(self, ax: Any) -> None:
        """Boundaries as grey lines, each iteration's number at its start, inside the top."""
        for k, (n, ts) in enumerate(self.starts):
            x = float(self.axis.x(ts))
            if k:
                ax.axvline(x, color="0.75", lw=0.8, zorder=0)
            ax.text(x, 0.98, f" it {n}", transform=ax.get_xaxis_transform(), fontsize=7,
                    color="0.45", va="top", ha="left")  # fmt: skip

    def mark_changes(self, ax: Any) -> None:
        seen: set[str] = set()
        for c in self.changes:
            label, color, ls = CHANGE_STYLE[c.kind]
            count = sum(1 for o in self.changes if o.kind == c.kind)
            ax.axvline(float(self.axis.x(c.ts)), color=color, ls=ls, lw=0.9, alpha=0.8,
                       label=None if c.kind in seen else f"{label} ({count})")  # fmt: skip
            seen.add(c.kind)


def run_chart_options(cfg: RunConfig) -> dict[str, Any]:
    """``instrument`` and ``real_time`` of a run, from its run.json: any feed but the
    synthetic market is recorded or live data, drawn on UTC."""
    return {
        "instrument": (cfg.model_extra or {}).get("instrument"),
        "real_time": cfg.feed.get("kind") != "synthetic",
    }


def chart_figures(
    marks_by_iter: Sequence[np.ndarray],
    iters: Sequence[EdgeSection],
    profile: Profile,
    lines: Sequence[IterationLine] = (),
    instrument: dict[str, Any] | None = None,
    real_time: bool = False,
) -> dict[str, Figure]:
    """The four charts as figures. ``lines``: the committed metrics lines (their decisions are
    the marked changes); ``instrument``: run.json's, for the currencies; ``real_time``: the
    feed is recorded or live, so the axis is UTC."""
    ctx = _Context(marks_by_iter, iters, lines, real_time)
    cur = currencies(instrument, inverse=bool(iters) and iters[0].money is not None)
    return {
        "pnl": _pnl(ctx, iters, profile, cur),
        "inventory": _inventory(ctx, profile, cur),
        "quoted_spread": _spread(ctx),
        "blocks": _blocks(iters),
    }


def _pnl(ctx: _Context, iters: Sequence[EdgeSection], profile: Profile, cur: Currencies) -> Figure:
    """Cumulative PnL (account value relative to the start) and net_bps per iteration."""
    fig = Figure(figsize=(10, 6.5))
    ax1, ax2 = fig.subplots(2, 1)
    m = ctx.m
    money = iters[0].money if iters else None  # inverse: the account is valued in coin
    with np.errstate(invalid="ignore", divide="ignore"):
        if money is not None:
            pos_value = -m["position"] * money.contract_size / m["mid"]
        else:
            pos_value = m["position"] * m["mid"]
        value = m["cash"] + np.where(m["position"] == 0, 0.0, pos_value)
    if len(value):
        ctx.line(ax1, value - value[0], lw=1.0, color="tab:blue", label="PnL")
    ctx.iterations(ax1)
    ctx.mark_changes(ax1)
    ax1.axhline(0, color="0.5", lw=0.6)
    ax1.set(ylabel=f"PnL ({cur.money})", title=f"Cumulative PnL, {cur.money}")
    ctx.axis.style(ax1)
    if ctx.changes:
        ax1.legend(loc="lower left", fontsize=8)
    labels = [str(s.iteration) for s in iters]
    net = [s.net_bps if s.net_bps is not None else 0.0 for s in iters]
    colors = ["tab:green" if v >= profile.gates.bands.ok else "tab:red" for v in net]
    ax2.bar(labels, net, color=colors)
    b = profile.gates.bands
    for level, name, color in (
        (b.success, "success", "tab:green"),
        (b.ok, "ok", "tab:olive"),
        (b.warn, "warn", "tab:orange"),
    ):
        ax2.axhline(level, ls="--", lw=0.8, color=color, label=f"{name} ≥ {level:g}")
    ax2.axhline(0, color="0.5", lw=0.6)
    ax2.legend(loc="best", fontsize=8)
    ax2.set(xlabel="iteration", ylabel="net_bps", title="net_bps per iteration")
    fig.tight_layout()
    return fig


def _inventory(ctx: _Context, profile: Profile, cur: Currencies) -> Figure:
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    ctx.line(ax, ctx.m["position"], lw=0.9, color="tab:purple", drawstyle="steps-post")
    lim = profile.inventory.max_position
    ax.axhline(lim, ls="--", lw=0.8, color="tab:red", label=f"±max_position {lim:g} {cur.base}")
    ax.axhline(-lim, ls="--", lw=0.8, color="tab:red")
    ax.legend(loc="upper right", fontsize=8)
    ctx.iterations(ax)
    ax.set(ylabel=f"position ({cur.base})", title=f"Inventory, {cur.base}")
    ctx.axis.style(ax)
    fig.tight_layout()
    return fig


def _spread(ctx: _Context) -> Figure:
    """Our quotes and the best bid/ask, as distance from the mid in bps."""
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    m = ctx.m
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = {
            k: (m[k] - m["mid"]) / m["mid"] * BPS
            for k in ("bid_quote", "ask_quote", "best_bid", "best_ask")
        }
    ctx.line(ax, rel["best_bid"], lw=0.5, color="0.7", label="best bid/ask")
    ctx.line(ax, rel["best_ask"], lw=0.5, color="0.7")
    ctx.line(ax, rel["bid_quote"], lw=0.9, color="tab:green", label="our bid")
    ctx.line(ax, rel["ask_quote"], lw=0.9, color="tab:red", label="our ask")
    ax.axhline(0, color="0.3", lw=0.6)
    ctx.iterations(ax)
    ctx.mark_changes(ax)
    ax.legend(loc="upper right", fontsize=8)
    ax.set(ylabel="(price − mid) / mid, bps", title="Quoted spread")
    ctx.axis.style(ax)
    fig.tight_layout()
    return fig


def _blocks(iters: Sequence[EdgeSection]) -> Figure:
    """Block reasons per iteration (stacked)."""
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    labels = [str(s.iteration) for s in iters]
    reasons = list(BLOCK_REASONS)
    for s in iters:
        reasons += [r for r in s.block_reasons.counts if r not in reasons]
    bottom = np.zeros(len(iters))
    for r in reasons:
        vals = np.array([s.block_reasons.counts.get(r, 0) for s in iters], dtype=float)
        ax.bar(labels, vals, bottom=bottom, label=r)
        bottom += vals
    ax.legend(loc="upper right", fontsize=8)
    ax.set(xlabel="iteration", ylabel="blocked actions", title="Block reasons per iteration")
    fig.tight_layout()
    return fig
