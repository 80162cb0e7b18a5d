"""The fake exchange's HTTP and websocket handlers (REST depth, exchangeInfo, ``/fake/*``).

Why a module of its own: the request handling is separate from the paced producer and the
delivery of frames (``fake_exchange.py``); each handler takes the exchange it serves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import WSMsgType, web

from mm_sim.feeds.spec import FUTURES_SNAPSHOT_LIMITS
from mm_sim.venues.binance.fake_options import depth_weight
from mm_sim.venues.binance.fake_parts import (
    FAULTS,
    INJECT_ONLY,
    LATE_KEEP,
    STALL_S,
    FakeClient,
    FaultPlan,
    top_levels,
)
from mm_sim.venues.binance.sync import Market

if TYPE_CHECKING:
    from mm_sim.venues.binance.fake_exchange import FakeExchange

_MS = 1_000_000


def error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


async def h_depth(fx: FakeExchange, req: web.Request) -> web.Response:
    resp = depth_response(fx, req)
    fx.snapshot_log.append((time.monotonic(), resp.status))
    if fx.opts.weight_headers and resp.status != 418:
        limit = req.query.get("limit", "")
        weight = depth_weight(fx.market, int(limit) if limit.isdigit() else 100)
        resp.headers["X-MBX-USED-WEIGHT-1M"] = str(fx.weights.add(weight))
    return resp


def depth_response(fx: FakeExchange, req: web.Request) -> web.Response:
    sym = req.query.get("symbol")
    if not sym:
        return error(400, -1102, "Mandatory parameter 'symbol' was not sent.")
    if sym.upper() != fx.symbol:
        return error(400, -1121, "Invalid symbol.")
    futures = fx.market is Market.FUTURES
    try:
        limit = int(req.query.get("limit", "500" if futures else "100"))
    except ValueError:
        return error(400, -1100, "Illegal characters found in parameter 'limit'.")
    if (limit not in FUTURES_SNAPSHOT_LIMITS) if futures else not 1 <= limit <= 5000:
        return error(400, -1100, "Illegal value for parameter 'limit'.")
    fx.stats["snapshots"] += 1
    fp = fx.faults
    retry = {"Retry-After": f"{fp.retry_after_s:g}"}
    escalate = fx.opts.ban_escalation
    if escalate and fx.ban.left() > 0:
        fx.ban.during += 1  # asked while banned: still banned, for what is left
        left = {"Retry-After": f"{fx.ban.left():g}"}
        return error(418, -1003, "Way too many requests; IP banned.", left)
    if fp.take("ban", fx.rng):
        fp.fired["ban"] += 1
        if escalate:
            retry = {"Retry-After": f"{fx.ban.start(fp.retry_after_s):g}"}
        return error(418, -1003, "Way too many requests; IP banned.", retry)
    if fp.take("rate-limit", fx.rng):
        fp.fired["rate-limit"] += 1
        return error(429, -1003, "Too many requests; please use the websocket.", retry)
    if fp.take("bad-request", fx.rng):
        fp.fired["bad-request"] += 1
        return error(400, -1121, "Invalid symbol.")
    if fp.take("snapshot-error", fx.rng):
        fp.fired["snapshot-error"] += 1
        return error(503, -1001, "Internal error; unable to process your request.")
    uid = fx.book.update_id
    bids, asks = fx.book.bids, fx.book.asks
    if fp.injected["stale-snapshot"] > 0 or (
        "stale-snapshot" in fp.enabled and fx.rng.random() < fp.rate
    ):
        ids = fx.book.ids()
        if len(ids) > fp.stale_back:
            uid = ids[-fp.stale_back - 1]
            old = fx.book.at(uid)
            assert old is not None
            bids, asks = old
            if fp.injected["stale-snapshot"] > 0:
                fp.injected["stale-snapshot"] -= 1
            fp.fired["stale-snapshot"] += 1
    elif fx.opts.snapshot_inside or fp.take("snapshot-inside", fx.rng):
        inside = fx.book.inside()
        if inside is not None:
            uid, (bids, asks) = inside
            fx.stats["snapshots_inside"] += 1
    if fp.injected["gap-after-snapshot"] > 0:
        fp.injected["gap-after-snapshot"] -= 1
        fx._gap_after = uid
    b, a = top_levels(bids, asks, limit)
    if fp.take("crossed-snapshot", fx.rng) and b and a:
        fp.fired["crossed-snapshot"] += 1
        a = [(b[0][0], a[0][1]), *a[1:]]  # best ask at the best bid: a corrupt book
    body: dict[str, Any] = {"lastUpdateId": uid}
    if futures:
        now_ms = fx.venue_ms()
        body.update(E=now_ms, T=now_ms)
    pd, qd = fx.price_dec, fx.qty_dec
    body["bids"] = [[f"{p:.{pd}f}", f"{q:.{qd}f}"] for p, q in b]
    body["asks"] = [[f"{p:.{pd}f}", f"{q:.{qd}f}"] for p, q in a]
    return web.json_response(body)


async def h_time(fx: FakeExchange, req: web.Request) -> web.Response:
    """``/api/v3/time`` or ``/fapi/v1/time``: the venue's clock (with its offset, if any)."""
    fx.stats["time_requests"] += 1
    return web.json_response({"serverTime": fx.venue_ms()})


async def h_exchange_info(fx: FakeExchange, req: web.Request) -> web.Response:
    sym: dict[str, Any] = {
        "symbol": fx.symbol,
        "status": "TRADING",
        "filters": [
            {"filterType": "PRICE_FILTER", "tickSize": f"{fx.instrument.tick_size:.10f}"},
            {"filterType": "LOT_SIZE", "stepSize": f"{fx.instrument.lot_size:.10f}"},
        ],
    }
    if fx.market is Market.FUTURES:
        sym["contractType"] = "PERPETUAL"
        if fx.instrument.inverse:  # served as a COIN-M symbol (what dapi's exchangeInfo says)
            sym["contractSize"] = fx.instrument.contract_size
    return web.json_response({"timezone": "UTC", "symbols": [sym]})


async def h_info(fx: FakeExchange, req: web.Request) -> web.Response:
    t_now = time.monotonic()
    return web.json_response(
        {
            "fake_exchange": True,
            "symbol": fx.symbol,
            "market": str(fx.market),
            "speed": fx.speed,
            "epoch_ns": fx.epoch_ns,
            "now_ns": fx.now_ns(),
            "update_id": fx.book.update_id,
            "tick_size": fx.instrument.tick_size,
            "lot_size": fx.instrument.lot_size,
            "contract_size": fx.instrument.contract_size if fx.instrument.inverse else None,
            "price_decimals": fx.price_dec,
            "clients": len(fx.clients),
            "options": dataclasses.asdict(fx.opts),
            "bans": fx.ban.bans,
            "requests_during_ban": fx.ban.during,
            "faults": sorted(fx.faults.enabled),
            "fault_rate": fx.faults.rate,
            "fired": dict(fx.faults.fired),
            "stats": dict(fx.stats),
            "send": fx.send_stats(),
            "snapshot_requests": [[round(t - t_now, 6), st] for t, st in fx.snapshot_log],
        }
    )


async def h_book(fx: FakeExchange, req: web.Request) -> web.Response:
    try:
        depth = int(req.query.get("depth", "20"))
        uid = int(req.query["update_id"]) if "update_id" in req.query else None
    except ValueError:
        return error(400, -1100, "update_id and depth must be integers")
    book = fx.book.at(uid) if uid is not None else (fx.book.bids, fx.book.asks)
    if book is None:
        return error(404, -1, f"update id {uid} not in the kept history")
    b, a = top_levels(book[0], book[1], depth)
    return web.json_response(
        {
            "update_id": uid if uid is not None else fx.book.update_id,
            "bids": [[p, q] for p, q in b],
            "asks": [[p, q] for p, q in a],
        }
    )


async def h_inject(fx: FakeExchange, req: web.Request) -> web.Response:
    fault = req.query.get("fault", "")
    if fault not in FAULTS + INJECT_ONLY:
        return error(400, -1, f"unknown fault {fault!r}")
    try:
        count = int(req.query.get("count", "1"))
    except ValueError:
        return error(400, -1, "count must be an integer")
    fx.faults.injected[fault] += count
    return web.json_response({"injected": fault, "count": count})


async def h_faults(fx: FakeExchange, req: web.Request) -> web.Response:
    try:
        plan = FaultPlan.parse(req.query.get("faults", ""), float(req.query.get("rate", "0")))
    except ValueError as exc:
        return error(400, -1, str(exc))
    fx.faults.enabled, fx.faults.rate = plan.enabled, plan.rate
    return web.json_response({"faults": sorted(plan.enabled), "rate": plan.rate})


# --- websocket ------------------------------------------------------------------------


async def h_ws(fx: FakeExchange, req: web.Request) -> web.WebSocketResponse:
    category = req.match_info.get("category", "")
    combined = req.path.endswith("/stream")
    raw = req.query.get("streams", "") if combined else req.match_info.get("streams", "")
    streams = {s for s in raw.split("/") if s}
    # No permessage-deflate: Binance streams are not compressed and frames are written raw.
    ws = web.WebSocketResponse(heartbeat=fx.heartbeat_s, max_msg_size=1 << 20, compress=False)
    await ws.prepare(req)
    split = fx.opts.split_paths and fx.market is Market.FUTURES
    c = FakeClient(ws, req.transport, combined, streams, category, split)
    c.route(fx.symbol)
    fx.clients.append(c)
    fx.stats["connections"] += 1
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await control(fx, c, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        with contextlib.suppress(ValueError):
            fx.clients.remove(c)
    return ws


async def control(fx: FakeExchange, c: FakeClient, text: str) -> None:
    try:
        req = json.loads(text)
        method, rid = req["method"], req.get("id")
        params = req.get("params", [])
    except (ValueError, KeyError, TypeError):
        await c.ws.send_str(json.dumps({"code": 2, "msg": "Invalid request", "id": None}))
        return
    if method == "SUBSCRIBE":
        c.streams.update(params)
        reply: dict[str, Any] = {"result": None, "id": rid}
    elif method == "UNSUBSCRIBE":
        c.streams.difference_update(params)
        reply = {"result": None, "id": rid}
    elif method == "LIST_SUBSCRIPTIONS":
        reply = {"result": sorted(c.streams), "id": rid}
    else:
        reply = {"code": 2, "msg": f"Invalid request: unknown method {method!r}", "id": rid}
    c.route(fx.symbol)
    fx._write(c)  # stream frames already queued go first, as they were produced first
    await c.ws.send_str(json.dumps(reply))


def send_stats(fx: FakeExchange) -> dict[str, Any]:
    """Messages produced, their rate over the wall time they took, and send lateness."""
    n = fx._n_sent
    wall = fx._last_send - fx._first_send
    late = fx._late[: min(n, LATE_KEEP)] * 1e6
    pct = {f"p{q:g}": float(np.percentile(late, q)) for q in (50, 99, 99.9)} if len(late) else {}
    return {
        "messages": n,
        "wall_s": wall,
        "msgs_per_s": n / wall if wall > 0 else None,
        "feed_msgs_per_feed_s": fx.feed_msg_rate,
        "late_us": {**pct, "max": float(late.max()) if len(late) else None},
        "stalls": {
            "over_ms": STALL_S * 1e3,
            "episodes": [[t, w * 1e6] for t, w in fx._stalls],  # monotonic s, worst µs
        },
    }
