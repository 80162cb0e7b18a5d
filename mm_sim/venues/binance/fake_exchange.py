"""A Binance-shaped market-data server on 127.0.0.1, driven by any replayable feed.

Why: the live client must be tested against the real wire format and the real failure modes
(sequence gaps, duplicates, reordering, disconnects, stalls, malformed frames, stale snapshots)
without a network, and a user should see the whole live path offline (``make live-demo``).

What it serves (one aiohttp app, HTTP and websocket on the same port):

- ``/stream?streams=<sym>@depth@100ms/<sym>@trade`` (combined, ``{"stream","data"}`` wrapped)
  and ``/ws/<stream>`` (raw); ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS`` are answered.
  ``<sym>@depth`` is served at the same 100 ms pace as ``@depth@100ms`` (a simplification).
- ``GET /api/v3/depth`` (spot) or ``/fapi/v1/depth`` (futures) and ``exchangeInfo``.
- Introspection under ``/fake/``: ``info`` (symbol, market, clock), ``book?update_id=N&depth=K``
  (the TRUE book right after the diff ending at ``N``), ``inject?fault=F&count=C`` (one-shot
  faults for tests), ``faults?faults=a,b&rate=R`` (switch random faults at run time).

The feed's events are cut into 100 ms buckets of feed time; each bucket's net level changes
against the TRUE book become one ``depthUpdate`` with a real update-id range (futures ids skip
a little between events so only ``pu`` links them, as on Binance), its trades become ``trade``
messages. The exchange clock starts at the server's start and runs ``speed`` times faster than
the wall clock; event times ``E``/``T`` are on that clock. At the feed's end it starts over
(a snapshot in the feed becomes the diff to the new book), so the stream never runs dry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from mm_sim.events import ASK, BID, KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE, Instrument
from mm_sim.logs import get_logger
from mm_sim.venues.binance.messages import float_decimals
from mm_sim.venues.binance.sync import Market

log = get_logger("mm_sim.fake_exchange")

STREAM_FAULTS = ("gap", "dup", "reorder", "disconnect", "stall", "malformed")
SNAPSHOT_FAULTS = ("stale-snapshot",)
FAULTS = STREAM_FAULTS + SNAPSHOT_FAULTS
# One-shot faults only reachable through /fake/inject (tests of precise situations).
INJECT_ONLY = ("gap-after-snapshot", "snapshot-error")

BATCH_NS = 100_000_000
_MS = 1_000_000

Changes = list[tuple[int, float, float]]  # (side, price, qty); qty 0 removes the level


def _wire_symbol(symbol: str) -> str:
    """Binance symbols are upper-case alphanumerics (the synthetic one has a hyphen)."""
    return "".join(ch for ch in symbol.upper() if ch.isalnum())


class TrueBook:
    """The exchange's book plus enough history to show it at any recent update id.

    History is kept as the last ``history`` diffs on top of a base book: a query replays the
    diffs up to the asked id on a copy of the base, so memory stays bounded and answers exact.
    """

    def __init__(self, history: int = 5000) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.update_id = 0
        self._base: tuple[dict[float, float], dict[float, float], int] = ({}, {}, 0)
        self._hist: deque[tuple[int, int, Changes]] = deque()
        self._max = history

    @staticmethod
    def _apply(bids: dict[float, float], asks: dict[float, float], changes: Changes) -> None:
        for side, p, q in changes:
            book = asks if side == ASK else bids
            if q > 0.0:
                book[p] = q
            else:
                book.pop(p, None)

    def apply(self, first_id: int, final_id: int, changes: Changes) -> None:
        self._apply(self.bids, self.asks, changes)
        self.update_id = final_id
        self._hist.append((first_id, final_id, changes))
        if len(self._hist) > self._max:
            _, u, old = self._hist.popleft()
            b, a, _ = self._base
            self._apply(b, a, old)
            self._base = (b, a, u)

    def ids(self) -> list[int]:
        return [u for _, u, _ in self._hist]

    def at(self, update_id: int) -> tuple[dict[float, float], dict[float, float]] | None:
        """The book right after the diff ending at ``update_id`` (None if unknown/expired)."""
        if update_id == self.update_id:
            return dict(self.bids), dict(self.asks)
        b0, a0, base_id = self._base
        if update_id < base_id:
            return None
        bids, asks = dict(b0), dict(a0)
        if update_id == base_id:
            return bids, asks
        for _, u, ch in self._hist:
            if u > update_id:
                return None
            self._apply(bids, asks, ch)
            if u == update_id:
                return bids, asks
        return None


def top_levels(
    bids: dict[float, float], asks: dict[float, float], depth: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    return (
        sorted(bids.items(), key=lambda kv: -kv[0])[:depth],
        sorted(asks.items())[:depth],
    )


@dataclass
class FaultPlan:
    """Random faults (each enabled one fires with probability ``rate`` per diff and
    connection; stale-snapshot per REST request) plus one-shot injections from tests."""

    enabled: set[str] = field(default_factory=set)
    rate: float = 0.0
    stall_s: float = 2.0
    stale_back: int = 30  # a stale snapshot is this many diffs behind the stream
    injected: Counter[str] = field(default_factory=Counter)
    fired: Counter[str] = field(default_factory=Counter)

    @staticmethod
    def parse(text: str | None, rate: float) -> FaultPlan:
        names = {f.strip() for f in (text or "").split(",") if f.strip()}
        unknown = names - set(FAULTS)
        if unknown:
            raise ValueError(
                f"unknown fault(s) {sorted(unknown)}: expected some of {', '.join(FAULTS)}"
            )
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {rate}")
        return FaultPlan(names, rate)


class _Client:
    def __init__(self, ws: web.WebSocketResponse, combined: bool, streams: set[str]) -> None:
        self.ws = ws
        self.combined = combined
        self.streams = streams
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(20_000)
        self.held: str | None = None  # a reordered diff, sent after the next one
        self.stall_until = 0.0


class FakeExchange:
    """Serve ``events`` (EVENT_DTYPE, sorted by exchange time) as Binance market data."""

    def __init__(
        self,
        events: np.ndarray,
        instrument: Instrument,
        market: Market | str = Market.SPOT,
        speed: float = 1.0,
        port: int = 0,
        faults: FaultPlan | None = None,
        seed: int = 1,
        symbol: str | None = None,
        heartbeat_s: float = 20.0,
    ) -> None:
        if len(events) == 0:
            raise ValueError("the feed has no events")
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.events = events
        self.instrument = instrument
        self.market = Market(market)
        self.speed = float(speed)
        self.port = port
        self.faults = faults or FaultPlan()
        self.rng = random.Random(seed)
        self.symbol = symbol.upper() if symbol else _wire_symbol(instrument.symbol)
        self.heartbeat_s = heartbeat_s
        self.price_dec = (
            instrument.price_decimals
            if instrument.price_decimals is not None
            else float_decimals(instrument.tick_size)
        )
        self.qty_dec = float_decimals(instrument.lot_size)
        self.book = TrueBook()
        self.epoch_ns = time.time_ns()
        self.clients: list[_Client] = []
        self.trade_id = 0
        self.stats: Counter[str] = Counter()
        self._gap_after: int | None = None  # drop the first diff after this snapshot id
        self._runner: web.AppRunner | None = None
        self._producer: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    # --- clock ----------------------------------------------------------------------------

    def now_ns(self) -> int:
        """The exchange clock: starts at the server's start, runs ``speed`` x wall time."""
        return self.epoch_ns + int((time.time_ns() - self.epoch_ns) * self.speed)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        futures = self.market is Market.FUTURES
        prefix = "/fapi/v1" if futures else "/api/v3"
        app.router.add_get(f"{prefix}/depth", self._h_depth)
        app.router.add_get(f"{prefix}/exchangeInfo", self._h_exchange_info)
        app.router.add_get("/stream", self._h_ws)
        app.router.add_get("/ws", self._h_ws)
        app.router.add_get("/ws/{streams}", self._h_ws)
        app.router.add_get("/fake/info", self._h_info)
        app.router.add_get("/fake/book", self._h_book)
        app.router.add_route("*", "/fake/inject", self._h_inject)
        app.router.add_route("*", "/fake/faults", self._h_faults)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server: Any = site._server  # the bound port when 0 was asked for
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self.epoch_ns = time.time_ns()
        self._producer = asyncio.create_task(self._produce(), name="fake-exchange-producer")

    async def stop(self) -> None:
        self._stopped.set()
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
        for c in list(self.clients):
            with contextlib.suppress(Exception):
                await c.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- the feed → messages --------------------------------------------------------------

    async def _produce(self) -> None:
        ev = self.events
        ts = np.asarray(ev["exch_ts"])
        n = len(ev)
        t0 = int(ts[0])
        span = int(ts[-1]) - t0 + BATCH_NS
        offset = 0  # feed time shift of the current loop over the feed
        i = 0
        end = t0 + BATCH_NS
        prices = np.round(np.asarray(ev["price"], dtype=np.float64), self.price_dec)
        qtys = np.round(np.asarray(ev["qty"], dtype=np.float64), self.qty_dec)
        kinds = np.asarray(ev["kind"])
        sides = np.asarray(ev["side"])
        while True:
            j = int(np.searchsorted(ts, end, side="left"))
            e_ns = self.epoch_ns + (end - t0) + offset
            ahead = (e_ns - self.now_ns()) / self.speed / 1e9
            if ahead > 0:
                await asyncio.sleep(ahead)
            if i < j:
                self._bucket(
                    ts[i:j], prices[i:j], qtys[i:j], kinds[i:j], sides[i:j], t0, offset, e_ns
                )
                # Let connections send; a fast feed must not starve the event loop.
                await asyncio.sleep(0)
            i = j
            end += BATCH_NS
            if i >= n:
                offset += span
                i = 0
                end = t0 + BATCH_NS
                self.stats["feed_loops"] += 1

    def _bucket(
        self,
        ts: np.ndarray,
        px: np.ndarray,
        qt: np.ndarray,
        kd: np.ndarray,
        sd: np.ndarray,
        t0: int,
        offset: int,
        e_ns: int,
    ) -> None:
        staged: dict[tuple[int, float], float] = {}
        base = self.epoch_ns - t0 + offset
        rows = zip(kd.tolist(), sd.tolist(), px.tolist(), qt.tolist(), ts.tolist(), strict=True)
        for k, s, p, q, t in rows:
            if k in (KIND_DEPTH, KIND_SNAPSHOT):
                staged[(s, p)] = q
            elif k == KIND_TRADE:
                self._trade(s, p, q, (t + base) // _MS)
            elif k == KIND_CLEAR:
                staged = {(ASK, p0): 0.0 for p0 in self.book.asks}
                staged.update({(BID, p0): 0.0 for p0 in self.book.bids})
        changes: Changes = []
        bids, asks = self.book.bids, self.book.asks
        for (s, p), q in staged.items():
            cur = (asks if s == ASK else bids).get(p, 0.0)
            if q != cur:
                changes.append((s, p, q))
        if changes:
            self._diff(changes, e_ns // _MS)

    def _fmt(self, p: float, q: float) -> list[str]:
        return [f"{p:.{self.price_dec}f}", f"{q:.{self.qty_dec}f}"]

    def _trade(self, side: int, price: float, qty: float, t_ms: int) -> None:
        if qty <= 0.0:
            return
        self.trade_id += 1
        d: dict[str, Any] = {
            "e": "trade",
            "E": t_ms,
            "s": self.symbol,
            "t": self.trade_id,
            "p": f"{price:.{self.price_dec}f}",
            "q": f"{qty:.{self.qty_dec}f}",
            "T": t_ms,
            "m": side == ASK,  # the buyer rested: the aggressor sold
        }
        if self.market is Market.FUTURES:
            d["X"] = "MARKET"
        else:
            d["M"] = True
        self.stats["trades"] += 1
        self._broadcast("trade", d, is_diff=False)

    def _diff(self, changes: Changes, e_ms: int) -> None:
        prev = self.book.update_id
        futures = self.market is Market.FUTURES
        first = prev + 1 + (self.rng.randrange(3) if futures and prev else 0)
        final = first + len(changes) - 1
        self.book.apply(first, final, changes)
        d: dict[str, Any] = {"e": "depthUpdate", "E": e_ms}
        if futures:
            d["T"] = e_ms
        d.update(s=self.symbol, U=first, u=final)
        if futures:
            d["pu"] = prev
        d["b"] = [self._fmt(p, q) for s, p, q in changes if s != ASK]
        d["a"] = [self._fmt(p, q) for s, p, q in changes if s == ASK]
        self.stats["diffs"] += 1
        drop_all = False
        if self._gap_after is not None and first > self._gap_after:
            self._gap_after = None
            drop_all = True
            self.faults.fired["gap-after-snapshot"] += 1
        self._broadcast("depth", d, is_diff=True, drop_all=drop_all)

    # --- delivery and faults --------------------------------------------------------------

    def _stream_name(self, kind: str, c: _Client) -> str | None:
        sym = self.symbol.lower()
        for s in c.streams:
            if kind == "depth" and s in (f"{sym}@depth", f"{sym}@depth@100ms"):
                return s
            if kind == "trade" and s == f"{sym}@trade":
                return s
        return None

    def _broadcast(
        self, kind: str, payload: dict[str, Any], is_diff: bool, drop_all: bool = False
    ) -> None:
        plain = json.dumps(payload, separators=(",", ":"))
        one_shot: list[str] = []
        if is_diff:
            for f in STREAM_FAULTS:
                if self.faults.injected[f] > 0:
                    self.faults.injected[f] -= 1
                    one_shot.append(f)
        now = time.monotonic()
        for c in list(self.clients):
            name = self._stream_name(kind, c)
            if name is None:
                continue
            text = f'{{"stream":"{name}","data":{plain}}}' if c.combined else plain
            if c.stall_until > now:
                self.stats["stalled_drops"] += 1
                continue
            if not is_diff:
                self._put(c, text)
                continue
            if drop_all:
                continue
            fired = list(one_shot)
            if self.faults.rate > 0:
                fired += [
                    f
                    for f in STREAM_FAULTS
                    if f in self.faults.enabled and self.rng.random() < self.faults.rate
                ]
            self._deliver_diff(c, text, fired, now)

    def _deliver_diff(self, c: _Client, text: str, fired: list[str], now: float) -> None:
        for f in fired:
            self.faults.fired[f] += 1
        if "disconnect" in fired:
            c.queue.put_nowait(None)  # the sender closes after what is already queued
            self.clients.remove(c)
            return
        if "stall" in fired:
            c.stall_until = now + self.faults.stall_s
            return
        if "gap" in fired:
            return
        if "malformed" in fired:
            text = text[: len(text) // 2]
        if "reorder" in fired and c.held is None:
            c.held = text
            return
        self._put(c, text)
        if "dup" in fired:
            self._put(c, text)
        if c.held is not None:
            held, c.held = c.held, None
            self._put(c, held)

    def _put(self, c: _Client, text: str) -> None:
        try:
            c.queue.put_nowait(text)
        except asyncio.QueueFull:
            # Binance drops consumers that do not keep up; so do we.
            self.stats["slow_client_disconnects"] += 1
            with contextlib.suppress(ValueError):
                self.clients.remove(c)
            with contextlib.suppress(asyncio.QueueFull):
                c.queue.get_nowait()
                c.queue.put_nowait(None)

    # --- HTTP handlers --------------------------------------------------------------------

    def _error(self, status: int, code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    async def _h_depth(self, req: web.Request) -> web.Response:
        sym = req.query.get("symbol")
        if not sym:
            return self._error(400, -1102, "Mandatory parameter 'symbol' was not sent.")
        if sym.upper() != self.symbol:
            return self._error(400, -1121, "Invalid symbol.")
        futures = self.market is Market.FUTURES
        try:
            limit = int(req.query.get("limit", "500" if futures else "100"))
        except ValueError:
            return self._error(400, -1100, "Illegal characters found in parameter 'limit'.")
        if limit < 1 or limit > (1000 if futures else 5000):
            return self._error(400, -1100, "Illegal value for parameter 'limit'.")
        self.stats["snapshots"] += 1
        if self.faults.injected["snapshot-error"] > 0:
            self.faults.injected["snapshot-error"] -= 1
            self.faults.fired["snapshot-error"] += 1
            return self._error(503, -1001, "Internal error; unable to process your request.")
        uid = self.book.update_id
        bids, asks = self.book.bids, self.book.asks
        stale = self.faults.injected["stale-snapshot"] > 0 or (
            "stale-snapshot" in self.faults.enabled and self.rng.random() < self.faults.rate
        )
        if stale:
            ids = self.book.ids()
            if len(ids) > self.faults.stale_back:
                uid = ids[-self.faults.stale_back - 1]
                old = self.book.at(uid)
                assert old is not None
                bids, asks = old
                if self.faults.injected["stale-snapshot"] > 0:
                    self.faults.injected["stale-snapshot"] -= 1
                self.faults.fired["stale-snapshot"] += 1
        if self.faults.injected["gap-after-snapshot"] > 0:
            self.faults.injected["gap-after-snapshot"] -= 1
            self._gap_after = uid
        b, a = top_levels(bids, asks, limit)
        body: dict[str, Any] = {"lastUpdateId": uid}
        if futures:
            now_ms = self.now_ns() // _MS
            body.update(E=now_ms, T=now_ms)
        body["bids"] = [self._fmt(p, q) for p, q in b]
        body["asks"] = [self._fmt(p, q) for p, q in a]
        return web.json_response(body)

    async def _h_exchange_info(self, req: web.Request) -> web.Response:
        sym: dict[str, Any] = {
            "symbol": self.symbol,
            "status": "TRADING",
            "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": f"{self.instrument.tick_size:.10f}"},
                {"filterType": "LOT_SIZE", "stepSize": f"{self.instrument.lot_size:.10f}"},
            ],
        }
        if self.market is Market.FUTURES:
            sym["contractType"] = "PERPETUAL"
        return web.json_response({"timezone": "UTC", "symbols": [sym]})

    async def _h_info(self, req: web.Request) -> web.Response:
        return web.json_response(
            {
                "fake_exchange": True,
                "symbol": self.symbol,
                "market": str(self.market),
                "speed": self.speed,
                "epoch_ns": self.epoch_ns,
                "now_ns": self.now_ns(),
                "update_id": self.book.update_id,
                "tick_size": self.instrument.tick_size,
                "lot_size": self.instrument.lot_size,
                "price_decimals": self.price_dec,
                "clients": len(self.clients),
                "faults": sorted(self.faults.enabled),
                "fault_rate": self.faults.rate,
                "fired": dict(self.faults.fired),
                "stats": dict(self.stats),
            }
        )

    async def _h_book(self, req: web.Request) -> web.Response:
        try:
            depth = int(req.query.get("depth", "20"))
            uid = int(req.query["update_id"]) if "update_id" in req.query else None
        except ValueError:
            return self._error(400, -1100, "update_id and depth must be integers")
        book = self.book.at(uid) if uid is not None else (self.book.bids, self.book.asks)
        if book is None:
            return self._error(404, -1, f"update id {uid} not in the kept history")
        b, a = top_levels(book[0], book[1], depth)
        return web.json_response(
            {
                "update_id": uid if uid is not None else self.book.update_id,
                "bids": [[p, q] for p, q in b],
                "asks": [[p, q] for p, q in a],
            }
        )

    async def _h_inject(self, req: web.Request) -> web.Response:
        fault = req.query.get("fault", "")
        if fault not in FAULTS + INJECT_ONLY:
            return self._error(400, -1, f"unknown fault {fault!r}")
        try:
            count = int(req.query.get("count", "1"))
        except ValueError:
            return self._error(400, -1, "count must be an integer")
        self.faults.injected[fault] += count
        return web.json_response({"injected": fault, "count": count})

    async def _h_faults(self, req: web.Request) -> web.Response:
        try:
            plan = FaultPlan.parse(req.query.get("faults", ""), float(req.query.get("rate", "0")))
        except ValueError as exc:
            return self._error(400, -1, str(exc))
        self.faults.enabled, self.faults.rate = plan.enabled, plan.rate
        return web.json_response({"faults": sorted(plan.enabled), "rate": plan.rate})

    # --- websocket ------------------------------------------------------------------------

    async def _h_ws(self, req: web.Request) -> web.WebSocketResponse:
        combined = req.path == "/stream"
        raw = req.query.get("streams", "") if combined else req.match_info.get("streams", "")
        streams = {s for s in raw.split("/") if s}
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_s, max_msg_size=1 << 20)
        await ws.prepare(req)
        c = _Client(ws, combined, streams)
        self.clients.append(c)
        self.stats["connections"] += 1
        sender = asyncio.create_task(self._send_loop(c))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._control(c, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            with contextlib.suppress(ValueError):
                self.clients.remove(c)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return ws

    async def _send_loop(self, c: _Client) -> None:
        while True:
            text = await c.queue.get()
            if text is None:
                await c.ws.close()
                return
            try:
                await c.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    async def _control(self, c: _Client, text: str) -> None:
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
        await c.ws.send_str(json.dumps(reply))


__all__ = ["FAULTS", "INJECT_ONLY", "FakeExchange", "FaultPlan", "TrueBook", "top_levels"]
