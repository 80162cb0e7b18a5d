"""Charts a reader can place: UTC axis on real data, labelled iterations, marked override
changes, the instrument's currencies; the sweep heat map's colours centred on the gate."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from test_edge import simulate_run
from test_rundir import write_run

from mm_sim.config import Profile
from mm_sim.report.charts import NS_PER_DAY, chart_figures, run_chart_options
from mm_sim.report.currency import split_symbol
from mm_sim.report.render import build_reports, money_name
from mm_sim.report.rundir import RunDir
from mm_sim.report.schema import DecisionRecord, EdgeReport
from mm_sim.sweep.report import colour_limits, heatmap_title


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, list, list, EdgeReport]:
    root = tmp_path_factory.mktemp("charts") / "run"
    rd = write_run(root, simulate_run(5, n_iter=3, fills_per_iter=30))
    build_reports(rd, Profile(), charts=False)
    rd.close()
    rd = RunDir(root)
    lines = rd.committed_lines()
    marks = [r["marks"] for r in rd.iteration_records(lines, ("marks",))]
    edge = EdgeReport.model_validate_json((rd.reports / "EDGE_REPORT.json").read_text())
    return rd, lines, marks, edge


def _lines_x(ax) -> list[float]:
    return [float(ln.get_xdata()[0]) for ln in ax.get_lines() if ln.get_linestyle() == "--"]


def test_real_data_has_a_utc_axis_labelled_iterations_and_marked_changes(run) -> None:
    _, lines, marks, edge = run
    figs = chart_figures(marks, edge.iterations, Profile(), lines, None, real_time=True)
    pnl = figs["pnl"].axes[0]
    assert pnl.get_xlabel() == "time (UTC)"
    FigureCanvasAgg(figs["pnl"]).draw()
    ticks = [t.get_text() for t in pnl.get_xticklabels()]
    assert any(":" in t for t in ticks)  # clock times, not seconds since the start
    # each iteration's number, at its first mark
    texts = {t.get_text().strip(): t.get_position()[0] for t in pnl.texts}
    for line, m in zip(lines, marks, strict=True):
        assert texts[f"it {line.iteration}"] == pytest.approx(m["ts"][0] / NS_PER_DAY)
    # every tuner change, at the end of the iteration it was decided after
    changes = [d for ln in lines for d in ln.decisions if d.field is not None]
    legend = [t.get_text() for t in pnl.get_legend().get_texts()]
    assert f"tuner change ({len(changes)})" in legend
    assert _lines_x(pnl) == pytest.approx([m["ts"][-1] / NS_PER_DAY for m in marks])
    spread = figs["quoted_spread"].axes[0]
    assert f"tuner change ({len(changes)})" in [t.get_text() for t in spread.get_legend().texts]


def test_synthetic_runs_keep_elapsed_time(run) -> None:
    _, lines, marks, edge = run
    figs = chart_figures(marks, edge.iterations, Profile(), lines, None, real_time=False)
    assert figs["inventory"].axes[0].get_xlabel() == "simulated time (s)"


def test_an_emergency_change_is_marked_where_it_happened(run) -> None:
    _, lines, marks, edge = run
    ts = int(marks[1]["ts"][len(marks[1]) // 2])
    emergency = DecisionRecord(
        iteration=1, sim_ts=ts, driver="emergency", field="base_spread_bps_delta", old=0.11,
        new=0.2, reason="test",
    )  # fmt: skip
    mine = [lines[0], lines[1].model_copy(update={"decisions": [emergency]}), lines[2]]
    figs = chart_figures(marks, edge.iterations, Profile(), mine, None, real_time=True)
    ax = figs["pnl"].axes[0]
    assert "emergency change (1)" in [t.get_text() for t in ax.get_legend().get_texts()]
    solid = [float(ln.get_xdata()[0]) for ln in ax.get_lines()
             if ln.get_linestyle() == "-" and ln.get_color() == "tab:red"]  # fmt: skip
    assert solid == pytest.approx([ts / NS_PER_DAY])


@pytest.mark.parametrize(
    ("instrument", "pnl", "position"),
    [
        ({"symbol": "BTCUSDT", "venue": "binance"}, "PnL (USDT)", "position (BTC)"),
        ({"symbol": "SYNTH-BTCUSDT", "venue": "synthetic"}, "PnL (USDT)", "position (BTC)"),
        ({"symbol": "BTCUSD_PERP", "inverse": True, "contract_size": 100.0}, "PnL (BTC)",
         "position (contracts)"),
        ({"symbol": "AAPL", "venue": "NASDAQ"}, "PnL (USD)", "position (AAPL)"),
    ],
)  # fmt: skip
def test_units_name_the_currencies(run, instrument: dict, pnl: str, position: str) -> None:
    _, lines, marks, edge = run
    figs = chart_figures(marks, edge.iterations, Profile(), lines, instrument, real_time=True)
    assert figs["pnl"].axes[0].get_ylabel() == pnl
    assert figs["inventory"].axes[0].get_ylabel() == position


def test_symbols_split_into_currencies() -> None:
    assert split_symbol("BTC-PERPETUAL", "deribit") == ("BTC", "USD")
    assert split_symbol("ETHBTC") == ("ETH", "BTC")
    assert split_symbol("FDUSDUSDT")[1] == "USDT"
    assert split_symbol("XYZ") == ("base", "quote")  # not guessed


def test_heat_map_colours_are_centred_on_the_gate() -> None:
    gate = 2.5
    all_fail = np.array([[-1.0, 0.5], [2.0, np.nan]])
    lo, hi = colour_limits(all_fail, gate)
    assert (lo + hi) / 2 == gate
    cmap = colormaps["RdYlGn"]
    for v in all_fail[np.isfinite(all_fail)]:
        r, g, _, _ = cmap((v - lo) / (hi - lo))
        assert r > g, v  # failing cells are red, not green
    r, g, _, _ = cmap((3.5 - lo) / (hi - lo))
    assert g > r


def test_heat_map_title_fits_the_narrowest_figure() -> None:
    fig = Figure(figsize=(6.5, 3.2))
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    title = ax.set_title(heatmap_title("base_spread_bps_delta", "profile.quoting.gamma", 2.5),
                         fontsize=9)  # fmt: skip
    fig.tight_layout()
    canvas.draw()
    assert title.get_window_extent(canvas.get_renderer()).width <= fig.bbox.width


def test_the_axis_follows_the_feed(run) -> None:
    rd, *_ = run
    cfg = rd.load_config()
    assert run_chart_options(cfg)["real_time"] is True  # a file feed
    synthetic = cfg.model_copy(update={"feed": {"kind": "synthetic", "name": "synthetic"}})
    assert run_chart_options(synthetic)["real_time"] is False


def test_results_table_names_the_money(run) -> None:
    rd, _, _, edge = run
    cfg = rd.load_config()
    assert money_name(cfg, edge.totals) == "quote"  # the test run records no instrument
    usdt = cfg.model_copy(update={"instrument": {"symbol": "BTCUSDT", "venue": "binance"}})
    assert money_name(usdt, edge.totals) == "USDT"
    assert (
        "| component | bps of notional | amount (quote) |"
        in (rd.reports / "SOAK_RESULTS.md").read_text()
    )


def test_a_chart_the_renderer_cannot_draw_costs_no_report(
    run, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """matplotlib once failed inside a live soak's charts ("raster overflow"), and the soak
    ended in an internal error without its reports. A failing renderer (injected here: the
    data that made matplotlib fail was not kept) now leaves every report whole and says so."""
    import shutil

    import mm_sim.report.render as render

    rd0, *_ = run
    root = tmp_path / "run"
    shutil.copytree(rd0.root, root)
    rd = RunDir(root)

    def broken(*_a: object, **_k: object) -> dict:
        raise RuntimeError("FT_Render_Glyph failed with error 0x62: raster overflow")

    monkeypatch.setattr(render, "chart_figures", broken)
    summary = build_reports(rd, Profile(), charts=True)
    md = (rd.reports / "SOAK_RESULTS.md").read_text()
    assert "Not drawn: the renderer failed (RuntimeError: FT_Render_Glyph" in md
    assert not list(rd.reports.glob("*.png"))
    assert summary["verdict"] and (rd.reports / "EDGE_REPORT.json").exists()
    rd.close()
