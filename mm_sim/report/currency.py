"""The instrument's currencies, read from its symbol, so charts and tables can say "USDT" and
"BTC" instead of "quote" and "base".

Symbols carry them in the venues' own spellings: ``BTCUSDT`` (Binance, quote glued on),
``BTC-PERPETUAL`` (Deribit, quoted in USD), ``BTCUSD_PERP`` (COIN-M), ``ETH-USD``,
``SYNTH-BTCUSDT`` (the embedded market, named after what it imitates), ``AAPL`` on NASDAQ
(LOBSTER: shares in USD). What cannot be read stays the generic word, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Longest first: "USDT" must win over "USD", "FDUSD" over "USD".
QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "TRY", "BTC", "ETH", "BNB")
_SUFFIXES = re.compile(r"([_-](PERP|PERPETUAL|SWAP)|[_-]\d{6,8})$")
_PREFIXES = ("SYNTH-",)
EQUITY_VENUES = {"NASDAQ": "USD"}


@dataclass(frozen=True)
class Currencies:
    base: str  # what quantities count (contracts for an inverse instrument)
    quote: str  # what prices are in
    money: str  # what PnL, fees and cash are in (the base coin for an inverse instrument)


def currencies(instrument: dict[str, Any] | None, inverse: bool = False) -> Currencies:
    """The currencies of ``instrument`` as run.json records it (symbol, venue, inverse);
    ``inverse``: the reports say the run is inverse (its money is coin) whatever it records."""
    inst = instrument or {}
    base, quote = split_symbol(str(inst.get("symbol") or ""), str(inst.get("venue") or ""))
    if inst.get("inverse") or inverse:
        coin = base if base != "base" else "base coin"
        return Currencies(base="contracts", quote=quote, money=coin)
    return Currencies(base=base, quote=quote, money=quote)


def split_symbol(symbol: str, venue: str = "") -> tuple[str, str]:
    """(base, quote) of a symbol; ("base", "quote") when it does not say."""
    s = symbol.upper()
    for prefix in _PREFIXES:
        s = s.removeprefix(prefix)
    perpetual = bool(_SUFFIXES.search(s))
    s = _SUFFIXES.sub("", s)
    if venue.upper() in EQUITY_VENUES and s.isalpha():
        return s, EQUITY_VENUES[venue.upper()]
    for sep in ("-", "/", "_"):
        if sep in s:
            base, quote = s.split(sep, 1)
            if base.isalnum() and quote.isalnum():
                return base, quote
    for q in QUOTES:
        if s.endswith(q) and len(s) > len(q):
            return s[: -len(q)], q
    if perpetual and s.isalpha():  # Deribit's BTC-PERPETUAL: quoted in USD
        return s, "USD"
    return "base", "quote"
