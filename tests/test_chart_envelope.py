"""Charts draw long series from a min/max envelope: the extremes, the order and the gaps of the
full series stay, and the picture is closer to the full series' than a stride of as many
points (what the charts drew before)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mm_sim.report.charts import envelope

N = 200_000


def _series() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = np.arange(N) / 1000.0
    y = np.cumsum(rng.normal(size=N))
    y[50_000:50_500] = np.nan  # a stretch without quotes
    y[rng.integers(0, N, 300)] = np.nan  # isolated holes
    y[123_456] = np.nanmax(y) + 40.0  # one spike a stride would miss
    return x, y


def _pixels(x: np.ndarray, y: np.ndarray, lim: tuple[float, float], steps: bool) -> np.ndarray:
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(x, y, lw=0.9, color="black", drawstyle="steps-post" if steps else "default")
    ax.set_xlim(0.0, N / 1000.0)
    ax.set_ylim(*lim)
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float64)


@pytest.mark.parametrize("steps", [False, True])
def test_closer_to_the_full_picture_than_a_stride(steps: bool) -> None:
    x, y = _series()
    ex, ey = envelope(x, y)
    assert len(ex) < N / 10  # the point of it
    stride = slice(None, None, N // len(ex))
    lim = (float(np.nanmin(y)) - 1, float(np.nanmax(y)) + 1)
    full = _pixels(x, y, lim, steps)

    def rms(img: np.ndarray) -> float:
        return float(np.sqrt(np.mean((img - full) ** 2)))

    env, thin = rms(_pixels(ex, ey, lim, steps)), rms(_pixels(x[stride], y[stride], lim, steps))
    assert env < 0.6 * thin, (env, thin)


def test_envelope_keeps_extremes_order_and_gaps() -> None:
    x, y = _series()
    ex, ey = envelope(x, y, columns=500)
    fin = np.isfinite(ey)
    assert np.nanmax(ey) == np.nanmax(y) and np.nanmin(ey) == np.nanmin(y)  # the spike too
    assert np.all(np.diff(ex[fin]) > 0)  # in time order
    # each kept point is a point of the series
    pos = np.searchsorted(x, ex[fin])
    assert np.array_equal(x[pos], ex[fin]) and np.array_equal(y[pos], ey[fin])
    # every hole in the data is a break in the line, the isolated ones included
    assert np.count_nonzero(~fin) == np.count_nonzero(np.diff(np.isnan(y).astype(int)) == 1)
    # ... and no segment of the line spans a hole: between two points drawn as one segment
    # (adjacent in the output, no NaN between) the series has no NaN
    holes = np.cumsum(np.isnan(y))
    seg = fin[:-1] & fin[1:]
    a = np.searchsorted(x, ex[:-1][seg])
    b = np.searchsorted(x, ex[1:][seg])
    assert np.array_equal(holes[a], holes[b])


def test_short_series_are_drawn_as_they_are() -> None:
    x = np.arange(100, dtype=float)
    y = np.sin(x)
    ex, ey = envelope(x, y)
    assert np.array_equal(ex, x) and np.array_equal(ey, y)
    ex, ey = envelope(np.arange(20_000.0), np.full(20_000, np.nan))
    assert len(ex) == 0 and len(ey) == 0
