"""Stream routing: USD-M futures serves depth on /public and trades on /market.

The fake exchange's ``split_paths`` mode routes as Binance documents (a connection without a
routed path gets only /public data, silently). The client must get both depth and trades with
the documented layout, and must say loudly when depth flows without trades.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from live_harness import MODES, running, small_feed
from test_live_soak import _env, _serve

from mm_sim.events import KIND_DEPTH, KIND_TRADE, open_feed
from mm_sim.feeds.spec import BinanceLiveFeedSpec, resolve_feed
from mm_sim.venues.binance.client_config import (
    FUTURES_ROUTES,
    SPOT_ROUTES,
    ClientConfig,
    default_routes,
)
from mm_sim.venues.binance.sync import Market

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def feed():
    return small_feed()


@pytest.mark.parametrize("mode", MODES)
async def test_documented_futures_layout_gets_depth_and_aggtrades(feed, mode: str) -> None:
    async with running(
        feed,
        mode,
        "futures",
        fake={"split_paths": True},
        routes=FUTURES_ROUTES,
        trade_stream="aggTrade",
    ) as run:
        cl = run.cl
        await run.until(lambda: cl.counters.trades >= 20 and cl.counters.diffs >= 20)
        await run.matches_truth()
        ev = run.events
        assert np.count_nonzero(ev["kind"] == KIND_TRADE) >= 20
        assert np.count_nonzero(ev["kind"] == KIND_DEPTH) > 0
        assert cl.connections == 2 and cl.counters.trade_silences == 0
        assert run.fx.stats["connections"] == 2


@pytest.mark.parametrize("mode", MODES)
async def test_one_unrouted_connection_gets_no_trades_and_says_so(feed, mode: str) -> None:
    """The old single combined URL against the routed venue: depth only, and a warning."""
    async with running(
        feed,
        mode,
        "futures",
        fake={"split_paths": True},
        routes=SPOT_ROUTES,
        trade_stream="aggTrade",
        trade_silence_s=0.3,
    ) as run:
        cl = run.cl
        await run.until(lambda: cl.counters.trade_silences >= 1)
        assert cl.counters.trades == 0 and cl.counters.diffs > 0
        assert cl.counters.trade_silent_now and cl.counters.trade_silence_max_s >= 0.3
        await run.matches_truth()  # depth itself is fine: that is why it goes unnoticed


def test_shipped_definitions_default_to_the_documented_layout() -> None:
    fut = resolve_feed("binance-futures-testnet")
    assert fut.trade_stream == "aggTrade"
    assert [(c.path, c.streams) for c in fut.connections] == [(p, s) for p, s in FUTURES_ROUTES]
    spot = resolve_feed("binance-spot-testnet")
    assert spot.connections is None and spot.trade_stream == "trade"
    # COIN-M is not split by path: one connection at the base, REST under /dapi/v1
    coin = resolve_feed("binance-coinm-testnet")
    assert coin.margin == "coin-m" and coin.trade_stream == "aggTrade"
    assert [(c.path, c.streams) for c in coin.connections] == [(p, s) for p, s in SPOT_ROUTES]


def test_each_market_asks_its_own_rest_api_and_stream_paths() -> None:
    """The URLs the client opens, per market, as Binance documents them (docs/LIVE.md)."""
    base = {"ws_base": "wss://h", "rest_base": "https://r", "trade_stream": "aggTrade"}
    usdm = ClientConfig("BTCUSDT", Market.FUTURES, routes=default_routes(Market.FUTURES), **base)
    assert usdm.stream_urls == [
        "wss://h/public/stream?streams=btcusdt@depth@100ms",
        "wss://h/market/stream?streams=btcusdt@aggTrade",
    ]
    assert usdm.depth_url.startswith("https://r/fapi/v1/depth?") and usdm.time_url.endswith(
        "/fapi/v1/time"
    )
    coin = ClientConfig(
        "BTCUSD_PERP",
        Market.FUTURES,
        routes=default_routes(Market.FUTURES, coin_m=True),
        coin_m=True,
        **base,
    )
    assert coin.stream_urls == [
        "wss://h/stream?streams=btcusd_perp@depth@100ms/btcusd_perp@aggTrade"
    ]
    assert coin.depth_url.startswith("https://r/dapi/v1/depth?") and coin.time_url.endswith(
        "/dapi/v1/time"
    )
    spot = ClientConfig("BTCUSDT", Market.SPOT, ws_base="wss://h", rest_base="https://r")
    assert spot.stream_urls == ["wss://h/stream?streams=btcusdt@depth@100ms/btcusdt@trade"]
    assert spot.depth_url.startswith("https://r/api/v3/depth?")


def test_margin_is_for_futures_only() -> None:
    with pytest.raises(ValueError, match="margin"):
        BinanceLiveFeedSpec(
            kind="binance-ws", name="x", market="spot", margin="coin-m", ws_base="w", rest_base="r"
        )


def test_record_with_the_shipped_coinm_definition_gets_depth_and_trades(tmp_path) -> None:
    """``record --feed binance-coinm-testnet``, hosts pointed at a fake exchange serving an
    inverse feed as a COIN-M symbol (REST under /dapi/v1); the rest as shipped."""
    from test_inverse import C, coinm_definition

    synth = coinm_definition(tmp_path / "synth.json")
    with _serve("--feed", str(synth), "--market", "futures") as url:  # speed 1: a real venue
        with urllib.request.urlopen(url.replace("ws://", "http://") + "/fake/info") as r:
            info = json.loads(r.read())
        definition = _definition(tmp_path, url, source="binance-coinm-testnet.json")
        res = _record(definition, tmp_path / "rec.npy", "0.1", symbol=info["symbol"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "WARNING" not in res.stdout
    kinds = np.asarray(open_feed(tmp_path / "rec.npy").events["kind"])
    assert np.count_nonzero(kinds == KIND_TRADE) > 0 and np.count_nonzero(kinds == KIND_DEPTH) > 0
    meta = json.loads((tmp_path / "rec.json").read_text())
    assert meta["instrument"]["inverse"] is True and meta["instrument"]["contract_size"] == C
    text = json.dumps(meta)
    assert "/dapi/v1/depth" in text and "@aggTrade" in text and "/public/" not in text
    # COIN-M diffs carry the pair ("ps"): every one must still take the fast parser
    client = meta["stats"]["client"]
    assert client["diffs"] > 0 and client["diffs_general"] == 0, client


def _definition(
    tmp_path: Path, url: str, source: str = "binance-futures-testnet.json", **update: object
) -> Path:
    """A shipped definition with only its hosts pointed at the fake exchange."""
    data = json.loads((REPO / "feeds" / source).read_text())
    port = url.rsplit(":", 1)[1]
    data["ws_base"] = f"ws://127.0.0.1:{port}"
    data["rest_base"] = f"http://127.0.0.1:{port}"
    data.update(update)
    path = tmp_path / source
    path.write_text(json.dumps(data))
    return path


def _record(
    definition: Path, out: Path | None, minutes: str, cwd: Path = REPO, symbol: str = "BTCUSDT"
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mm_sim", "record", "--feed", f"{definition}:{symbol}"]
    cmd += ["--minutes", minutes] + (["-o", str(out)] if out is not None else [])
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


def test_record_with_the_shipped_futures_definition_gets_depth_and_trades(tmp_path) -> None:
    """``record --feed binance-futures-testnet:BTCUSDT``, hosts pointed at a fake exchange
    that routes streams by path as Binance does; everything else is the shipped definition."""
    with _serve("--market", "futures", "--split-paths", "--symbol", "BTCUSDT") as url:
        definition = _definition(tmp_path, url)
        res = _record(definition, None, "0.1", cwd=tmp_path)  # as in the issue: no -o
    assert res.returncode == 0, res.stderr[-2000:]
    assert "WARNING" not in res.stdout
    (out,) = (tmp_path / "artifacts" / "recordings").glob("binance-futures-testnet-BTCUSDT-*.npy")
    feed = open_feed(out)
    kinds = np.asarray(feed.events["kind"])
    assert np.count_nonzero(kinds == KIND_TRADE) > 0 and np.count_nonzero(kinds == KIND_DEPTH) > 0
    meta = json.loads(out.with_suffix(".json").read_text())
    text = json.dumps(meta)
    assert "/public/stream?streams=btcusdt@depth@100ms" in text
    assert "/market/stream?streams=btcusdt@aggTrade" in text
    assert re.search(r'"trade_silences": 0', text)


def test_record_warns_when_depth_flows_without_trades(tmp_path) -> None:
    with _serve("--market", "futures", "--split-paths", "--symbol", "BTCUSDT") as url:
        definition = _definition(
            tmp_path,
            url,
            connections=[{"path": "", "streams": ["depth", "trade"]}],
            trade_silence_s=1.0,
        )
        res = _record(definition, tmp_path / "fut.npy", "0.1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "WARNING: no trades" in res.stdout
    meta = json.loads((tmp_path / "fut.json").read_text())
    assert '"trade_silences": 1' in json.dumps(meta)
