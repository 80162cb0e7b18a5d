"""USD-M aggTrade's ``nq``: fills against hidden Retail Price Improvement (RPI) orders.

Binance's USD-M depth streams and snapshots leave RPI orders out; since 2025-12-31 an
``aggTrade`` carries ``q`` (every fill, RPI included) and ``nq`` (without the RPI fills). A
simulator mirroring the visible book must take ``nq``: ``q`` would deplete queues and fill
quotes with liquidity the book never had. The fake exchange's ``rpi_share`` sends such prints.
"""

from __future__ import annotations

import numpy as np
import pytest
from live_harness import MODES, running, small_feed

from mm_sim.events import KIND_TRADE
from mm_sim.venues.binance.client_config import FUTURES_ROUTES
from mm_sim.venues.binance.messages import MessageError, Trade, parse_message

_AGG = '{"e":"aggTrade","E":9,"s":"BTCUSDT","a":5,"p":"100.5","q":"3",%s"f":1,"l":2,"T":8,"m":true}'


@pytest.fixture(scope="module")
def feed():
    return small_feed()


def _trade(nq: str) -> Trade:
    msg = parse_message(_AGG % nq)
    assert isinstance(msg, Trade)
    return msg


def test_the_visible_quantity_is_nq_and_the_rest_is_rpi() -> None:
    assert (_trade('"nq":"1.25",').qty, _trade('"nq":"1.25",').rpi_qty) == (1.25, 1.75)
    assert (_trade("").qty, _trade("").rpi_qty) == (3.0, 0.0)  # COIN-M, spot, older captures
    assert _trade('"nq":"0",').qty == 0.0  # only RPI fills: nothing visible traded
    for bad in ('"nq":"4",', '"nq":"x",', '"nq":"-1",'):
        with pytest.raises(MessageError, match="nq"):
            parse_message(_AGG % bad)


@pytest.mark.parametrize("mode", MODES)
async def test_rpi_fills_do_not_count_as_traded_visible_liquidity(feed, mode: str) -> None:
    events, _ = feed
    true_qty = np.unique(events["qty"][events["kind"] == KIND_TRADE])
    async with running(
        feed,
        mode,
        "futures",
        fake={"split_paths": True, "rpi_share": 1.0},
        routes=FUTURES_ROUTES,
        trade_stream="aggTrade",
    ) as run:
        cl = run.cl
        await run.until(lambda: cl.counters.trades >= 20)
        assert run.fx.stats["rpi_prints"] >= 20 and cl.counters.trades_rpi >= 20
        ev = run.events
        got = ev["qty"][ev["kind"] == KIND_TRADE]
        assert len(got) >= 20
        # every print's q was twice its true quantity: the client must hand on nq
        assert np.isin(got, true_qty).all(), (got[:10], true_qty[:10])
        await run.matches_truth()
