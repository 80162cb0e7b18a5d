"""The live client's REST side: depth snapshots and the venue's server time.

Why a module of its own: the websocket side (``client.py``) moves frames and keeps
connections; what it asks the venue over HTTP (a snapshot when the book sync needs one, with
backoff, rate limits and permanent errors; the venue's clock again after a lost connection)
has its own failure rules. :class:`RestSide` is mixed into
:class:`~mm_sim.venues.binance.client.BinanceClient` and uses its state.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp

from mm_sim.errors import UserError
from mm_sim.logs import get_logger
from mm_sim.venues.binance import clock_sync
from mm_sim.venues.binance.client_config import ClientConfig, retry_after_s, venue_message
from mm_sim.venues.binance.client_parts import HttpStatus as _HttpStatus
from mm_sim.venues.binance.client_parts import note_weight
from mm_sim.venues.binance.messages import MessageError, decode, parse_snapshot
from mm_sim.venues.binance.processor import ClientCounters, StreamProcessor

log = get_logger("mm_sim.binance")

CLOCK_MOVED_NS = 1_000_000_000  # a venue clock this far off after a loss: a restarted venue


class RestSide:
    """Snapshots and server-time checks of :class:`BinanceClient` (its state, declared here)."""

    cfg: ClientConfig
    clock: Callable[[], int]
    rng: random.Random
    counters: ClientCounters
    proc: StreamProcessor
    fatal: UserError | None
    clock_log: list[dict[str, Any]]
    _session: aiohttp.ClientSession | None
    _snap_task: asyncio.Task[None] | None
    _epoch: int
    _closing: bool
    _refetch: bool
    _items: deque[tuple[Any, ...]]
    _wake: asyncio.Event
    _nudge: asyncio.Event

    def _notify(self) -> None:  # pragma: no cover - the client's
        raise NotImplementedError

    def _start_snapshot(self) -> None:
        task = self._snap_task
        if task is not None and not task.done():
            if task is asyncio.current_task():
                # Push mode: the snapshot this task just delivered was processed inside it (and
                # refused: stale, crossed). The task must fetch again rather than end, or the
                # request is lost and the book stays unsynced until the next reconnect.
                self._refetch = True
            return
        self._snap_task = asyncio.create_task(self._fetch_snapshot(self._epoch))

    async def _fetch_snapshot(self, epoch: int) -> None:
        cfg = self.cfg
        delay = cfg.snapshot_retry_base_s
        assert self._session is not None
        while epoch == self._epoch and not self._closing:
            self.counters.snapshot_fetches += 1
            try:
                async with self._session.get(cfg.depth_url) as resp:
                    body = await resp.read()
                    if resp.status in (429, 418):
                        self.counters.rate_limited += 1
                        wait = retry_after_s(resp.headers.get("Retry-After"), delay)
                        log.warning("snapshot rate-limited", status=resp.status, retry_after=wait)
                        self.counters.rate_limit_wait_s += wait
                        await asyncio.sleep(wait)
                        delay = min(cfg.snapshot_retry_cap_s, delay * 2)
                        continue
                    note_weight(self.counters, resp.headers)
                    if 400 <= resp.status < 500:
                        # Bad symbol, bad limit: asking again cannot help.
                        self._fail(
                            UserError(
                                f"{cfg.depth_url}: the venue refused the depth snapshot request "
                                f"(HTTP {resp.status}): {venue_message(body)}"
                            )
                        )
                        return
                    if resp.status != 200:
                        raise _HttpStatus(f"HTTP {resp.status}: {body[:80]!r}")
                local = self.clock()
                snap = parse_snapshot(decode(body)[0], cfg.symbol.upper())
            except (aiohttp.ClientError, TimeoutError, MessageError, _HttpStatus) as exc:
                self.counters.snapshot_failures += 1
                log.warning("snapshot fetch failed; retrying", error=str(exc)[:120])
                await asyncio.sleep(delay * self.rng.uniform(0.5, 1.0))
                delay = min(cfg.snapshot_retry_cap_s, delay * 2)
                continue
            self._refetch = False
            self._items.append(("snap", epoch, snap, local))
            self._notify()
            if not self._refetch:
                return
            self._refetch = False
            delay = cfg.snapshot_retry_base_s

    def _fail(self, err: UserError) -> None:
        """A permanent error: stop, and raise it to the consumer (``poll``, or ``fatal``)."""
        self.counters.permanent_errors += 1
        log.error("live feed stopped", error=str(err)[:300])
        self.fatal = err
        self._closing = True
        self._wake.set()
        self._nudge.set()

    async def _check_venue_clock(self) -> None:
        """Measure the venue's clock again (its server time) before reconnecting. A venue that
        restarted may come back on another clock (the fake exchange's starts at its launch):
        its event times would then be far behind ours and, held at the last time seen
        (exchange times never go back), freeze the run's exchange clock. A clock moved by
        more than ``CLOCK_MOVED_NS`` beyond the estimate's error is a restarted venue: its
        times are mapped onto ours from now on (``venue_shift_ns``, unless the feed's clock
        is ``raw``) and its trade ids begin again (``note_restart``)."""
        if self._session is None:
            return
        est = await clock_sync.measure(self._session, self.cfg.time_url, self.clock, quiet=True)
        c = self.counters
        c.clock_checks += 1
        if est is None:
            return  # the venue is still down, or has no server time: the next attempt asks
        proc = self.proc
        moved = est.offset_ns + proc.venue_shift_ns  # against what the shift in force expects
        if abs(moved) <= est.uncertainty_ns + CLOCK_MOVED_NS:
            return
        proc.note_restart(f"venue clock moved {moved / 1e6:+.0f} ms")
        entry = {**est.to_json(), "moved_ms": round(moved / 1e6, 3), "rebased": False}
        if self.cfg.rebase_clock:
            proc.venue_shift_ns = -est.offset_ns
            c.clock_rebases += 1
            c.venue_clock_shift_ms = round(-est.offset_ns / 1e6, 3)
            entry["rebased"] = True
        self.clock_log.append(entry)
        log.warning("venue clock moved", **entry)
