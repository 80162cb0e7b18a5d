"""``mm_sim record``: record a live feed into a replayable native feed file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from mm_sim.commands import path_arg
from mm_sim.errors import UserError
from mm_sim.events import FeedWriter, temp_file_beside
from mm_sim.feeds.convert.publish import check_replace
from mm_sim.feeds.spec import BinanceLiveFeedSpec, resolve_feed

# A week of exchange time: a longer capture is better cut into days (and inf was an internal
# error)
MAX_MINUTES = 7 * 24 * 60.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record",
        help="record a live feed to a replayable .npy feed",
        description=(
            "Connect to a live feed (a binance-ws definition, NAME:SYMBOL, or ws://HOST:PORT of "
            "a fake exchange), keep the book in sync exactly as the soak does, and write the "
            "native events to FILE (.npy + .json metadata with the feed's counters). "
            "Ctrl-C or SIGTERM stops early and keeps what was recorded (a WARNING line, exit "
            "130 / 143)."
        ),
    )
    p.add_argument("--feed", required=True, help="live feed")
    p.add_argument("--minutes", type=float, required=True, help="exchange-clock minutes")
    p.add_argument(
        "-o",
        "--out",
        type=path_arg,
        help="output feed (.npy), or a folder for it; default "
        "artifacts/recordings/<feed>-<SYMBOL>-<UTC time>.npy",
    )
    p.add_argument(
        "--force", action="store_true", help="replace OUT when it is already an mm_sim feed"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.minutes <= MAX_MINUTES:  # NaN and inf too
        raise UserError(f"--minutes must be > 0 and at most {MAX_MINUTES:g}, got {args.minutes}")
    spec = resolve_feed(args.feed)
    if not isinstance(spec, BinanceLiveFeedSpec):
        raise UserError(f"feed {args.feed!r} is not live; record needs a binance-ws feed")
    out = _out_path(args.out, spec)
    # Before connecting: a recording is minutes of a live feed that cannot be had again, so
    # an existing file is replaced only as convert replaces one (--force, a feed of ours), and
    # an output folder that cannot be written to is named now, not after the recording.
    check_replace(out, args.force)
    _check_writable(out)
    path, count, stats, sig = asyncio.run(_record(spec, args.minutes, out))
    stopped_by = stats["stopped_by"]
    # A signal's exit status, as a soak's (docs/WHAT_HAPPENS_WHEN.md): 128 + its number
    status = 128 + sig if sig is not None else 0
    if count == 0:
        # Nothing to keep: a feed of 0 events is refused by every reader, so none is written.
        if stopped_by:
            print(
                f"mm_sim record: {stopped_by} before any event arrived: nothing written",
                file=sys.stderr,
            )
            return status
        raise UserError(
            f"feed {args.feed!r}: no event arrived in {args.minutes:g} exchange-clock minutes; "
            f"nothing written to {out}"
        )
    print(
        f"recorded {count:,} events to {path} "
        f"(resyncs {stats['book_sync']['resyncs']}, gaps {stats['book_sync']['gaps']}, "
        f"overflow {stats['client']['overflow']})"
    )
    clock = stats["clock"]
    print(
        f"clock: {clock['shift_ms']} ms added to local receive times ({clock['chosen']}); "
        f"server offset {clock.get('server_offset_ms')} ms "
        f"± {clock.get('server_uncertainty_ms')} ms; corrected feed lag p50 "
        f"{clock['lag_ms_corrected'].get('p50')} ms"
    )
    for line in stats["warnings"]:
        print(f"WARNING: {line}")
    if stopped_by:
        # Kept, but shorter than asked: said as a WARNING (the pre-flight check of docs/LIVE.md
        # reads "no WARNING line" as a good recording) and with the status of an interrupt, so a
        # script does not go on with a recording of seconds where it asked for minutes.
        print(f"WARNING: {stopped_by} before --minutes {args.minutes:g}: the recording is short")
    return status


# The signals that stop a recording early, keeping what it has, and how it says so.
_STOP_REASONS = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "stopped by SIGTERM"}


def _out_path(out: Path | None, spec: BinanceLiveFeedSpec) -> Path:
    """The .npy to write: -o as given (".npy" added), a default name inside -o when it is a
    directory (it wrote DIR.npy beside it), artifacts/recordings/ without -o."""
    if out is not None and out.suffix == ".json":
        raise UserError(
            f"-o {out}: -o names the feed's .npy (its .json sidecar is written beside it); "
            f"e.g. -o {out.with_suffix('.npy')}"
        )
    if out is None or out.is_dir():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in spec.name or "live")
        folder = Path("artifacts") / "recordings" if out is None else out
        return folder / f"{name}-{spec.symbol or 'auto'}-{stamp}.npy"
    return out if out.suffix == ".npy" else out.with_name(out.name + ".npy")


def _check_writable(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file_beside(out)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UserError(f"-o {out}: cannot write there ({exc.strerror})") from None


def _clock_model(feed: Any) -> Any:
    """The live run's clock correction as the sidecar's clock model (mm_sim/feeds/clock.py)."""
    from mm_sim.feeds.clock import ClockModel

    info = feed.identity.get("clock", {})
    model = feed.lags.model()
    shift_ms = feed.clock_shift_ns / 1e6
    raw = {k: None if v is None else round(v - shift_ms, 3) for k, v in model.lag_ms_raw.items()}
    return ClockModel(
        shift_ns=feed.clock_shift_ns,
        method=f"live-{info.get('chosen', 'unknown')}".replace(": ", "-").replace(" ", "-"),
        samples=model.samples,
        lag_ms_raw=raw,
        estimated="live, from the venue's server time (applied to the live run as well)",
    )


async def _record(
    spec: BinanceLiveFeedSpec, minutes: float, out: Path
) -> tuple[Path, int, dict[str, Any], int | None]:
    from mm_sim.venues.binance.live_source import open_live

    stop = asyncio.Event()
    stopped_by: list[signal.Signals] = []

    def _stop(sig: signal.Signals) -> None:
        stopped_by.append(sig)
        stop.set()

    loop = asyncio.get_running_loop()
    # SIGTERM (kill, timeout, a service manager) as Ctrl-C: it killed the process, losing
    # the recording and leaving its hidden temp file behind.
    for sig in _STOP_REASONS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _stop, sig)
    feed = await open_live(spec)
    writer = FeedWriter(out, feed.instrument)
    shift = feed.clock_shift_ns
    try:
        async for chunk in feed.chunks(1, int(minutes * 60e9)):
            if len(chunk.events):
                ev = chunk.events
                if shift:
                    # Stored as received (raw clock); the sidecar's clock model carries the
                    # shift, which replay adds back exactly as the live run did.
                    ev = ev.copy()
                    ev["local_ts"] -= shift
                writer.write(ev)
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
        "clock": counters["clock"],
        "reorder": counters["reorder"],
        "warnings": counters["warnings"],
        "minutes": minutes,
        "interrupted": bool(stopped_by),
        "stopped_by": _STOP_REASONS[stopped_by[0]] if stopped_by else None,
    }
    signum = int(stopped_by[0]) if stopped_by else None
    if writer.count == 0:
        writer.abort()
        return out, 0, stats, signum
    path = writer.close({"format": "binance-live", **feed.identity}, stats, _clock_model(feed))
    return path, writer.count, stats, signum
