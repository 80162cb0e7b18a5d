"""A real client against a real fake exchange on loopback, in either consumption mode.

Why a module of its own: every new fake-exchange behaviour is tested in both client modes
(pull: ``poll``, as the soak and ``record`` run; push: ``set_sink``, the low-latency path), and
the waiting must not depend on which one runs. Nothing here is timed: waits end as soon as
their condition holds and ``HANG_S`` only stops a hung test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import numpy as np

from mm_sim.feeds.spec import load_events, resolve_feed
from mm_sim.venues.binance.client import BinanceClient, ClientConfig
from mm_sim.venues.binance.fake_exchange import FakeExchange
from mm_sim.venues.binance.sync import SyncState

SPEED = 20.0
HANG_S = 60.0
MODES = ["pull", "push"]


def small_feed() -> tuple[np.ndarray, Any]:
    spec = resolve_feed("synthetic-short").model_copy(update={"duration_s": 60.0})
    events, instrument, _ = load_events(spec, 1)
    return events, instrument


class Run:
    """A client in one mode, with everything it delivered kept for assertions."""

    def __init__(self, fx: FakeExchange, cl: BinanceClient, mode: str) -> None:
        self.fx, self.cl, self.mode = fx, cl, mode
        self.parts: list[np.ndarray] = []
        if mode == "push":
            cl.set_sink(lambda ev, _arr: self.parts.append(ev))

    @property
    def events(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.empty(0)

    async def step(self) -> None:
        if self.mode == "push":
            await asyncio.sleep(0.01)
        else:
            polled = await self.cl.poll(0.02)
            if len(polled.events):
                self.parts.append(polled.events)

    async def until(self, pred: Callable[[], bool]) -> None:
        deadline = time.monotonic() + HANG_S
        while not pred():
            cl = self.cl
            assert time.monotonic() < deadline, (
                f"hung: {cl.counters.as_dict()} {cl.sync.counters.as_dict()} {cl.sync.state}"
            )
            assert cl.sink_error is None, cl.sink_error
            await self.step()

    async def matches_truth(self) -> None:
        """The client's top 10 levels equal the exchange's true book at the same update id."""
        cl = self.cl
        await self.until(lambda: cl.sync.state is SyncState.SYNCED)
        uid = cl.proc.last_update_id
        bids, asks = cl.proc.top(10)
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{self.fx.rest_base}/fake/book", params={"update_id": uid, "depth": 10}) as r,
        ):
            assert r.status == 200, await r.text()
            truth = await r.json()
        assert len(bids) == len(asks) == 10
        assert [list(x) for x in bids] == truth["bids"]
        assert [list(x) for x in asks] == truth["asks"]


async def inject(fx: FakeExchange, fault: str, count: int = 1) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{fx.rest_base}/fake/inject", params={"fault": fault, "count": count}) as r,
    ):
        assert r.status == 200, await r.text()


def config(fx: FakeExchange, **kw: Any) -> ClientConfig:
    kw.setdefault("backoff_base_s", 0.05)
    kw.setdefault("snapshot_retry_base_s", 0.05)
    return ClientConfig(fx.symbol, fx.market, fx.ws_base, fx.rest_base, **kw)


@contextlib.asynccontextmanager
async def running(
    feed: tuple[np.ndarray, Any],
    mode: str,
    market: str = "spot",
    fake: dict[str, Any] | None = None,
    warmup_s: float = 0.25,
    **kw: Any,
) -> AsyncIterator[Run]:
    """A fake exchange (``fake``: its optional behaviours) and a started client in ``mode``."""
    events, instrument = feed
    fx = FakeExchange(events, instrument, market=market, speed=SPEED, **(fake or {}))
    await fx.start()
    await asyncio.sleep(warmup_s)  # some history, so stale snapshots can be served
    cl = BinanceClient(config(fx, **kw), clock=fx.now_ns)
    await cl.start()
    try:
        yield Run(fx, cl, mode)
    finally:
        await cl.close()
        await fx.stop()
