"""``mm_sim record``: record a live feed into a replayable native feed file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

from mm_sim.errors import UserError
from mm_sim.events import FeedWriter
from mm_sim.feeds.spec import BinanceLiveFeedSpec, resolve_feed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record",
        help="record a live feed to a replayable .npy feed",
        description=(
            "Connect to a live feed (a binance-ws definition, NAME:SYMBOL, or ws://HOST:PORT of "
            "a fake exchange), keep the book in sync exactly as the soak does, and write the "
            "native events to FILE (.npy + .json metadata with the feed's counters). "
            "Ctrl-C stops early and keeps what was recorded."
        ),
    )
    p.add_argument("--feed", required=True, help="live feed")
    p.add_argument("--minutes", type=float, required=True, help="exchange-clock minutes")
    p.add_argument("-o", "--out", required=True, type=Path, help="output feed (.npy)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.minutes > 0:
        raise UserError(f"--minutes must be > 0, got {args.minutes}")
    spec = resolve_feed(args.feed)
    if not isinstance(spec, BinanceLiveFeedSpec):
        raise UserError(f"feed {args.feed!r} is not live; record needs a binance-ws feed")
    path, count, stats = asyncio.run(_record(spec, args.minutes, args.out))
    print(
        f"recorded {count:,} events to {path} "
        f"(resyncs {stats['book_sync']['resyncs']}, gaps {stats['book_sync']['gaps']}, "
        f"overflow {stats['client']['overflow']})"
    )
    for line in warnings(stats["client"]):
        print(f"WARNING: {line}")
    return 0


def warnings(client: dict[str, Any]) -> list[str]:
    """What a pre-flight recording must not hide (docs/LIVE.md, "before the first real run")."""
    out = []
    if client.get("trade_silences") or (client.get("diffs") and not client.get("trades")):
        out.append(
            f"no trades for {client.get('trade_silence_max_s', 0):.0f} s while depth flowed "
            f"({client.get('trades', 0)} trades, {client.get('diffs', 0)} diffs): the trade "
            "stream is probably on the wrong path (see the feed's 'connections')"
        )
    return out


async def _record(
    spec: BinanceLiveFeedSpec, minutes: float, out: Path
) -> tuple[Path, int, dict[str, Any]]:
    from mm_sim.venues.binance.live_source import open_live

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
    feed = await open_live(spec)
    writer = FeedWriter(out, feed.instrument)
    try:
        async for chunk in feed.chunks(1, int(minutes * 60e9)):
            if len(chunk.events):
                writer.write(chunk.events)
            if stop.is_set():
                break
    except BaseException:
        writer.abort()
        await feed.close()
        raise
    await feed.close()
    counters = feed.counters()
    stats: dict[str, Any] = {
        "client": counters["client"],
        "book_sync": counters["book_sync"],
        "credentials": counters["credentials"],
        "minutes": minutes,
        "interrupted": stop.is_set(),
    }
    path = writer.close({"format": "binance-live", **feed.identity}, stats)
    return path, writer.count, stats
