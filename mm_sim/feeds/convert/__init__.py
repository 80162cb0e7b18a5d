"""Converters from recorded market data to mm_sim's native feed format.

Each format module exposes ``convert(inputs, out, options) -> ConvertResult``; the
``convert`` command dispatches on ``--from``.
"""

FORMATS = {
    "binance": "mm_sim.feeds.convert.binance",
    "binance-csv": "mm_sim.feeds.convert.binance_csv",
    "tardis": "mm_sim.feeds.convert.tardis",
    "lobster": "mm_sim.feeds.convert.lobster",
}
