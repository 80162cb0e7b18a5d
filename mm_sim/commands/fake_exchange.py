"""``mm_sim fake-exchange``: serve a feed as Binance market data on 127.0.0.1 (tests, demos)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import re
import signal

from mm_sim.errors import UserError
from mm_sim.feeds.spec import MAX_SYNTHETIC_S, SyntheticFeedSpec, load_events, resolve_feed
from mm_sim.venues.binance.fake_exchange import FAULTS, FakeExchange, FaultPlan
from mm_sim.venues.binance.fake_parts import LATE_TRADE_RATES

GC_EVERY_S = 30.0  # full cyclic collections while serving (automatic ones are off)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fake-exchange",
        help="serve a feed as Binance websocket + REST market data on 127.0.0.1",
        description=(
            "Serve a replayable feed (the synthetic market by default) on 127.0.0.1 in Binance's "
            "wire format: combined streams at /stream, the REST depth snapshot, exchangeInfo, "
            "and /fake/* introspection (true book at an update id, fault injection). "
            "Runs until interrupted."
        ),
    )
    p.add_argument("--feed", default="synthetic-short", help="feed name, .npy or definition")
    p.add_argument("--port", type=int, default=8765, help="TCP port (0 = any free port)")
    p.add_argument(
        "--speed", type=float, default=1.0, help="exchange clock vs wall clock (at most 10000)"
    )
    p.add_argument(
        "--msg-rate",
        type=float,
        help="messages per wall second to aim for (sets --speed from the feed's own rate)",
    )
    p.add_argument("--market", choices=["spot", "futures"], default="spot")
    p.add_argument("--symbol", help="symbol on the wire (default: the feed's, alphanumerics)")
    p.add_argument("--faults", default="", help=f"comma-separated, of: {','.join(FAULTS)}")
    p.add_argument("--fault-rate", type=float, default=0.0, help="probability per diff")
    p.add_argument("--stall-s", type=float, default=2.0, help="length of a stall fault")
    p.add_argument(
        "--retry-after-s",
        type=float,
        default=1.0,
        help="Retry-After of a rate-limit (429/418) answer (a ban's first length)",
    )
    p.add_argument(
        "--shutdown-grace-s",
        type=float,
        default=1.0,
        help="seconds between a serverShutdown event and the connection's close",
    )
    p.add_argument(
        "--split-paths",
        action="store_true",
        help="futures: route streams by path as Binance does (/public depth, /market trades; "
        "no routed path gets only /public data)",
    )
    p.add_argument(
        "--clock-offset-ms",
        type=float,
        default=0.0,
        help="the venue's clock runs this far ahead of the clock it publishes (event times, "
        "server time)",
    )
    p.add_argument(
        "--late-trades",
        default="0",
        help="share of trades sent after the diff that carries their liquidity change "
        "('auto': the rate measured in real captures, 22.8%% spot, 7.7%% futures)",
    )
    p.add_argument(
        "--snapshot-inside",
        action="store_true",
        help="depth snapshots taken strictly inside a diff's [U, u] range",
    )
    p.add_argument(
        "--stream-delay-s",
        type=float,
        default=0.0,
        help="websocket frames leave this much after REST sees the change (snapshots ahead)",
    )
    p.add_argument(
        "--overlap-diffs",
        type=float,
        default=0.0,
        help="spot: share of diffs that restate the previous one (overlapping ranges)",
    )
    p.add_argument(
        "--rpi-share",
        type=float,
        default=0.0,
        help="USD-M: share of aggTrades whose q also counts fills against hidden RPI orders "
        "(nq, the visible part, stays the true quantity)",
    )
    p.add_argument(
        "--cut-after-s",
        type=float,
        help="close every connection this long after it opened (Binance: 24 h)",
    )
    p.add_argument(
        "--ban-escalation",
        action="store_true",
        help="each 418 ban doubles the previous one; a request during a ban gets 418 again",
    )
    p.add_argument(
        "--weight-headers",
        action="store_true",
        help="send X-MBX-USED-WEIGHT-1M (request weight used in the last minute)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the feed and of the faults")
    p.add_argument(
        "--duration-s", type=float, help="length of a synthetic feed before it loops (600)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        plan = FaultPlan.parse(args.faults, args.fault_rate)
    except ValueError as exc:
        raise UserError(f"--faults/--fault-rate: {exc}") from None
    for flag, value in (("--stall-s", args.stall_s), ("--fault-rate", args.fault_rate)):
        if not (value >= 0 and math.isfinite(value)):
            raise UserError(f"{flag} = {value}: expected a finite number >= 0")
    if not 0 <= args.seed < 2**64:
        raise UserError(f"--seed = {args.seed}: expected 0 <= seed < 2**64")
    plan.stall_s = args.stall_s
    plan.retry_after_s = args.retry_after_s
    plan.shutdown_grace_s = args.shutdown_grace_s
    # Finite, all of them: --speed inf (or --msg-rate inf) listened, then failed with an
    # internal error on its first message; --stream-delay-s inf or nan served no frame at all
    # to a client that then recorded an empty feed; an infinite Retry-After or grace never ends.
    if not (args.speed > 0 and math.isfinite(args.speed)):
        raise UserError(f"--speed must be a finite number > 0, got {args.speed}")
    if args.msg_rate is not None and not (args.msg_rate > 0 and math.isfinite(args.msg_rate)):
        raise UserError(f"--msg-rate must be a finite number > 0, got {args.msg_rate}")
    for flag, value in (
        ("--retry-after-s", args.retry_after_s),
        ("--shutdown-grace-s", args.shutdown_grace_s),
        ("--stream-delay-s", args.stream_delay_s),
    ):
        if not (value >= 0 and math.isfinite(value)):  # NaN too
            raise UserError(f"{flag} = {value}: expected a finite number of seconds >= 0")
    if not abs(args.clock_offset_ms) <= 86_400_000:  # NaN too
        raise UserError(
            f"--clock-offset-ms = {args.clock_offset_ms}: expected a finite offset within ±1 day"
        )
    if not 0 <= args.port < 65536:
        raise UserError(f"--port must be within 0..65535, got {args.port}")
    if args.late_trades == "auto":
        late = LATE_TRADE_RATES[args.market]
    else:
        try:
            late = float(args.late_trades)
        except ValueError:
            late = -1.0
        if not 0.0 <= late <= 1.0:
            raise UserError(
                f"--late-trades must be 'auto' or within [0, 1], got {args.late_trades!r}"
            )
    if args.symbol is not None and not re.fullmatch(r"[A-Za-z0-9_]{1,32}", args.symbol):
        # It goes into the messages as it is: a quote or a space would corrupt every frame.
        raise UserError(
            f"--symbol {args.symbol!r}: expected letters, digits and _ (e.g. BTCUSDT, BTCUSD_PERP)"
        )
    duration = 600.0 if args.duration_s is None else args.duration_s
    if not 0.0 < duration <= MAX_SYNTHETIC_S:  # NaN too
        raise UserError(
            f"--duration-s {args.duration_s!r}: expected seconds in (0, {MAX_SYNTHETIC_S:g}]"
        )
    spec = resolve_feed(args.feed)
    if isinstance(spec, SyntheticFeedSpec):
        spec = spec.model_copy(update={"duration_s": duration})
    events, instrument, _ = load_events(spec, args.seed)
    if len(events) == 0:
        raise UserError(f"feed {args.feed!r} has no events")
    try:
        fx = FakeExchange(
            events,
            instrument,
            market=args.market,
            speed=args.speed,
            port=args.port,
            faults=plan,
            seed=args.seed,
            symbol=args.symbol,
            msg_rate=args.msg_rate,
            split_paths=args.split_paths,
            clock_offset_ms=args.clock_offset_ms,
            late_trades=late,
            snapshot_inside=args.snapshot_inside,
            stream_delay_s=args.stream_delay_s,
            overlap_diffs=args.overlap_diffs,
            rpi_share=args.rpi_share,
            cut_after_s=args.cut_after_s,
            ban_escalation=args.ban_escalation,
            weight_headers=args.weight_headers,
        )
    except ValueError as exc:
        raise UserError(f"fake-exchange: {exc}") from None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        asyncio.run(_serve(fx))
    else:
        uvloop.run(_serve(fx))
    return 0


async def _serve(fx: FakeExchange) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await fx.start()
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1:{fx.port} ({exc.strerror or exc})") from None
    # What exists now (imports, the feed) lives until exit: keep it out of the cyclic GC. And
    # no automatic collections while serving: they came every ~130 ms and took 1-13 ms each
    # (measured), holding back every message due meanwhile, which then left in one burst and
    # showed up as the client's latency. Sending makes almost no cyclic garbage (0 objects
    # found in 396 collections); connections and requests make a little, so a full collection
    # runs every GC_EVERY_S instead.
    gc.freeze()
    gc.disable()
    faults = ",".join(sorted(fx.faults.enabled)) or "none"
    print(
        f"fake exchange listening on {fx.ws_base} ({fx.market} {fx.symbol}, speed {fx.speed:g}, "
        f"~{fx.feed_msg_rate * fx.speed:,.0f} msg/s, faults {faults} @ {fx.faults.rate:g}); "
        f"feed: --feed {fx.ws_base}",
        flush=True,
    )
    producer = fx.producer
    assert producer is not None
    try:
        while not stop.is_set():
            # Until a signal, or the producer failing: a server left listening with no feed
            # behind it would look alive to a client that then waits for data forever.
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait(
                {waiter, producer}, timeout=GC_EVERY_S, return_when="FIRST_COMPLETED"
            )
            waiter.cancel()
            if producer.done():
                break  # fx.stop() below raises its error
            gc.collect()
    finally:
        await fx.stop()
        send = fx.send_stats()
        send["stalls"] = len(send["stalls"]["episodes"])
        print(f"fake exchange stopped: {dict(fx.stats)} {send}", flush=True)
