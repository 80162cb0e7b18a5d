"""The money view of an inverse (coin-margined) run: the same records as a linear instrument.

A contract of size C quote units is worth −C/P coin, so q contracts bought at P are, in money,
q·C units of an instrument priced 1/P *sold*. Mirroring every record that way (side −s,
quantity q·C, prices and mids 1/P, position −position·C) turns the account's coin PnL,
cash − position·C/mid, into cash + position'·mid', and the linear edge decomposition then
holds term by term in the base coin. Bps are unchanged in meaning: an amount over the coin
notional q·C/P. Counts, sizes, prices and quotes shown to the user stay in the instrument's own
units (contracts, quote prices); only the money terms use this view (docs/CORE.md,
"Inverse contracts").
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from mm_sim.report.churn import Orders
from mm_sim.report.schema import Money


def contract_size_of(instrument: dict[str, Any] | None) -> float:
    """C of an inverse instrument as run.json records it, 0 for a linear one (or none)."""
    if not instrument or not instrument.get("inverse"):
        return 0.0
    return float(instrument["contract_size"])


def coin_fills(fills: np.ndarray, csize: float) -> np.ndarray:
    """FILL records of an inverse run in the mirrored linear instrument (fees unchanged: coin)."""
    out = fills.copy()
    out["side"] = -fills["side"]
    out["qty"] = fills["qty"] * csize
    for name in ("price", "quote_price", "mid_decision", "mid_fill"):
        out[name] = 1.0 / fills[name]
    out["position_after"] = -fills["position_after"] * csize
    return out


def coin_marks(marks: np.ndarray, csize: float) -> np.ndarray:
    """MARK records in the mirrored instrument (NaN mids stay NaN); cash is already coin."""
    out = marks.copy()
    with np.errstate(divide="ignore"):
        out["mid"] = 1.0 / marks["mid"]
    out["position"] = -marks["position"] * csize
    return out


def rule_orders(orders: Orders, csize: float) -> Orders:
    """Orders as the venue's dust rule values them (qty × price, quote): an inverse contract
    is worth C whatever the price."""
    if csize <= 0.0:
        return orders
    return replace(orders, price=np.full(len(orders.price), csize))


def quote_value(coin: float | None, mid: float | None) -> float | None:
    """A coin amount in quote currency at ``mid`` (the figure shown beside the coin one)."""
    if coin is None or mid is None:
        return None
    return coin * mid


def money_figures(
    csize: float, pnl: float | None, net: float, contracts: float, final_mid: float | None
) -> Money | None:
    """The quote-currency figures beside an inverse section's coin ones (None if linear)."""
    if csize <= 0.0:
        return None
    return Money(
        currency="base_coin",
        contract_size=csize,
        quote_mid=final_mid,
        pnl_quote=quote_value(pnl, final_mid),
        net_quote=quote_value(net, final_mid),
        notional_quote=contracts * csize,
    )


def inverse_note(money: Money | None, pnl: float | None, notional: float) -> list[str]:
    """SOAK_RESULTS.md's units line of an inverse run (nothing for a linear one)."""
    if money is None:
        return []
    pnl_text = "—" if pnl is None else f"{pnl:+,.8f}"
    pq = "—" if money.pnl_quote is None else f"{money.pnl_quote:+,.2f}"
    mid = "—" if money.quote_mid is None else f"{money.quote_mid:,.2f}"
    return [
        f"Inverse contract ({money.contract_size:g} quote per contract): quantities are "
        f"contracts, money is base coin. Notional {notional:,.8f} coin "
        f"= {money.notional_quote:,.2f} quote; PnL {pnl_text} coin = {pq} quote at the final "
        f"mid {mid}.",
        "",
    ]
