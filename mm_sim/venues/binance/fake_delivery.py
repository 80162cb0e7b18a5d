"""The fake exchange's delivery: frames to each connection, with the faults that hit them.

Why a module of its own: ``fake_exchange.py`` paces the feed into messages; what happens to a
message on its way to one connection (a stall, a gap, a duplicate, a reordered or cut frame, a
``serverShutdown``, a delivered burst, a slow consumer dropped) and how frames are written
(one transport call per connection) is this part. :class:`Delivery` is mixed into
:class:`~mm_sim.venues.binance.fake_exchange.FakeExchange` and uses its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from mm_sim.venues.binance.fake_options import FakeOptions
from mm_sim.venues.binance.fake_parts import STREAM_FAULTS, FakeClient, FaultPlan, ws_frame


class Delivery:
    """Frames to connections, and faults (state declared here, owned by the exchange)."""

    faults: FaultPlan
    opts: FakeOptions
    clients: list[FakeClient]
    stats: Counter[str]
    max_client_buffer: int
    rng: Any

    def venue_ms(self) -> int:  # pragma: no cover - the exchange's
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:  # pragma: no cover - the exchange's
        raise NotImplementedError

    def _broadcast_diff(self, text: str, drop_all: bool) -> None:
        fp = self.faults
        # An injected fault waits for a diff someone receives: spent on a broadcast to nobody
        # (before the client it was meant for has subscribed) it was counted nowhere.
        heard = any(c.depth_name is not None for c in self.clients)
        one_shot = [f for f in STREAM_FAULTS if fp.injected[f] > 0] if heard else []
        for f in one_shot:
            fp.injected[f] -= 1
        random_on = fp.rate > 0 and bool(fp.enabled)
        now = time.monotonic()
        for c in list(self.clients):
            name = c.depth_name
            if name is None:
                continue
            if c.stall_until > now:
                self.stats["stalled_drops"] += 1
                continue
            if drop_all:
                continue
            fired = one_shot
            if random_on:
                rng = self.rng
                fired = one_shot + [
                    f for f in STREAM_FAULTS if f in fp.enabled and rng.random() < fp.rate
                ]
            if fired:
                self._deliver_faulty(c, name, text, fired, now)
                continue
            c.out.append((name, text))
            if c.held is not None:
                c.out.append(c.held)
                c.held = None

    def _deliver_faulty(
        self, c: FakeClient, name: str, text: str, fired: list[str], now: float
    ) -> None:
        for f in fired:
            self.faults.fired[f] += 1
        if "shutdown" in fired and not c.doomed:
            c.doomed = True
            c.out.append((None, f'{{"e":"serverShutdown","E":{self.venue_ms()}}}'))
            self._spawn(self._close_later(c, self.faults.shutdown_grace_s, "shutdown"))
        if "disconnect" in fired:
            self._write(c)  # what was queued before the cut still arrives
            self._drop(c, "disconnect")
            return
        if "stall" in fired:
            c.stall_until = now + self.faults.stall_s
            return
        if "burst" in fired and not c.hold_until:
            # Nothing is lost: frames wait and leave together when the stall ends.
            c.hold_until = now + self.faults.stall_s
            self.stats["bursts"] += 1
        if "gap" in fired:
            return
        item: tuple[str | None, str] = (name, text)
        if "malformed" in fired:
            whole = f'{{"stream":"{name}","data":{text}}}' if c.combined else text
            item = (None, whole[: len(whole) // 2])
        if "reorder" in fired and c.held is None:
            c.held = item
            return
        c.out.append(item)
        if "dup" in fired:
            c.out.append(item)
        if c.held is not None:
            c.out.append(c.held)
            c.held = None

    def _flush(self) -> None:
        cut = self.opts.cut_after_s
        now = time.monotonic()
        for c in list(self.clients):
            if cut is not None and now - c.connected >= cut:
                self._write(c)
                self._drop(c, "cut")  # the venue's connection limit (Binance: 24 h)
                continue
            if c.out or c.delayed:
                self._write(c)

    def _write(self, c: FakeClient) -> None:
        """Write the queued frames of one connection with a single transport call."""
        if c.hold_until:
            if c.hold_until > time.monotonic():
                return
            c.hold_until = 0.0
            self.stats["burst_frames"] += len(c.out)
        delay = self.opts.stream_delay_s
        if delay:
            # The stream lags the REST view by ``delay``: snapshots are ahead of it.
            now = time.monotonic()
            c.delayed.extend((now, item) for item in c.out)
            c.out.clear()
            while c.delayed and c.delayed[0][0] <= now - delay:
                c.out.append(c.delayed.popleft()[1])
        if not c.out:
            return
        tr = c.transport
        if tr is None or tr.is_closing() or c.ws.closed:
            # Closing (our close frame may be out): no data frame may follow it.
            c.out.clear()
            self._drop(c, "")
            return
        parts = []
        for name, text in c.out:
            if name is None:
                body = text
            elif c.combined:
                body = f'{{"stream":"{name}","data":{text}}}'
            else:
                body = text
            parts.append(ws_frame(body.encode()))
        self.stats["frames"] += len(parts)
        self.stats["writes"] += 1
        c.out.clear()
        tr.write(b"".join(parts))
        if tr.get_write_buffer_size() > self.max_client_buffer:
            # Binance drops consumers that do not keep up; so do we.
            self.stats["slow_client_disconnects"] += 1
            self._drop(c, "slow")

    def _drop(self, c: FakeClient, reason: str) -> None:
        if c in self.clients:
            self.clients.remove(c)
            if reason:
                self.stats[f"closed_{reason}"] += 1
        self._spawn(self._close(c))

    async def _close_later(self, c: FakeClient, delay_s: float, reason: str) -> None:
        await asyncio.sleep(delay_s)
        if c in self.clients:
            self._write(c)
            self._drop(c, reason)

    @staticmethod
    async def _close(c: FakeClient) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.ws.close(), 5.0)
