"""Plain-Python reference of the simulator core, written independently of the numba kernels.

Same semantics as ``mm_sim.core.engine`` (docs/CORE.md), different implementation: a dict book,
order objects, lists instead of preallocated tables and ring buffers. It is slow and meant for
differential tests on small streams: kernel and reference must agree on every fill, action,
block and mark and on the final account. Arithmetic is written in the same order as the kernels
so floats agree to rounding.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mm_sim.config import (
    DecisionPoints,
    EventOrder,
    LatencyMode,
    OrderType,
    Overrides,
    Profile,
    QueueModel,
    ThroughFill,
)
from mm_sim.core.records import (
    ACT_CANCEL,
    ACT_PLACE,
    ACT_REPLACE,
    ACTION_DTYPE,
    ACTION_NAMES,
    BLK_CONCURRENCY,
    BLK_MIN_INTERVAL,
    BLK_RISK,
    BLK_THROTTLE,
    BLOCK_DTYPE,
    BLOCK_REASONS,
    FILL_DTYPE,
    LIQ_MAKER,
    LIQ_TAKER,
    MARK_DTYPE,
)
from mm_sim.core.reference_parts import (
    NEVER,
    RefBook,
    RefCounters,
    RefOp,
    RefOrder,
    RefResult,
    RefSide,
    tick_of,
)
from mm_sim.events import KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE, Instrument

EPS = 1e-9
WALK_MAX = 64


class RefEngine:
    """Event-by-event reference with the subset of the ``Engine`` API the tests compare."""

    def __init__(
        self, profile: Profile, overrides: Overrides, instrument: Instrument, seed: int = 0
    ) -> None:
        q = profile.quoting
        self.tick = profile.instrument.tick_size or instrument.tick_size
        self.lot = profile.instrument.lot_size or instrument.lot_size
        self.order_qty = q.order_qty
        self.half_bps = q.base_half_spread_bps
        self.gamma = q.gamma
        self.tau = q.horizon_s
        self.vol_hl = q.vol_halflife_s
        self.vol_sample_ns = q.vol_sample_ms * 1e6
        self.levels = q.impact_levels
        self.max_pos = profile.inventory.max_position
        self.max_notional = profile.inventory.max_notional
        # Inverse contract: quantity in contracts of csize quote units, money in the base coin.
        self.csize = float(instrument.contract_size or 0.0) if instrument.inverse else 0.0
        self.maker_bps = profile.fees.maker_bps
        self.taker_bps = profile.fees.taker_bps
        lat = profile.latency
        self.feed_mode = lat.mode == LatencyMode.feed
        self.entry_ns = lat.entry_ms * 1e6
        self.cancel_ns = lat.cancel_ms * 1e6
        self.ack_ns = lat.ack_ms * 1e6
        self.feed_mult = lat.feed_mult
        self.probabilistic = profile.queue.model == QueueModel.probabilistic
        self.power = profile.queue.power
        self.max_in_flight = profile.limiter.max_in_flight
        self.venue_cap = float(profile.limiter.venue_budget)
        self.venue_rate = profile.limiter.venue_budget / (profile.limiter.venue_window_ms * 1e6)
        self.mark_ns = round(profile.mark_interval_ms * 1e6)
        m = profile.matching
        self.post_only = profile.quoting.order_type == OrderType.post_only
        self.per_ts = profile.quoting.decide == DecisionPoints.timestamp
        self.crossing_fills = m.crossing_fills
        self.through_order = m.through_fill == ThroughFill.order
        self.exchange_order = m.event_order == EventOrder.exchange
        self.window_ns = round(m.reorder_window_ms * 1e6)
        self.set_overrides(overrides)

        self.book = RefBook()  # the strategy's
        self.vbook = RefBook() if self.exchange_order else self.book  # the venue's
        self.lmax: int | None = None
        self.seq = 0
        self.held: list[np.void] = []
        self.sides = {1: RefSide(), -1: RefSide()}
        self.orders: list[RefOrder] = []  # known to the venue, ascending id
        self.ops: list[RefOp] = []
        self.reports: list[tuple[int, int, int, float, float]] = []
        self.next_id = 1
        self.last_arrival = NEVER
        self.pos_view = 0.0
        self.vol_init = False
        self.vol_last_mid = 0.0
        self.vol_last_ts = 0
        self.vol_var = 0.0
        self.tokens = {"replace": 0.0, "venue": 0.0}
        self.token_ts = {"replace": NEVER, "venue": NEVER}
        self.pos = 0.0
        self.cash = 0.0
        self.fees = 0.0
        self.started = False
        self.next_mark = 0
        self.pending: int | None = None
        self.lag = 0
        self.vlag = 0
        self.last_exch = 0
        self.c = RefCounters()
        self._fills: list[tuple[Any, ...]] = []
        self._actions: list[tuple[Any, ...]] = []
        self._blocks: list[tuple[Any, ...]] = []
        self._marks: list[tuple[Any, ...]] = []

    def set_overrides(self, o: Overrides) -> None:
        self.min_interval_ns = o.min_interval_ms * 1e6
        self.repl_cap = float(o.replace_rate_per_min)
        self.repl_rate = o.replace_rate_per_min / 60e9
        self.spread_delta = float(o.base_spread_bps_delta)
        self.tail_age_ns = o.tail_age_ms * 1e6
        self.impact_ratio = float(o.impact_cap_ratio)
        self.max_delta_ratio = float(o.max_delta_ratio)

    # -- latency ------------------------------------------------------------------------------

    def _leg(self, const_ns: float) -> int:
        """A leg of an action, from the feed lag of the strategy's last event."""
        if self.feed_mode:
            return int(self.feed_mult * self.lag + const_ns)
        return int(const_ns)

    def _vleg(self, const_ns: float) -> int:
        """A leg of a venue response, from the feed lag of the event the venue is at."""
        if self.feed_mode:
            return int(self.feed_mult * self.vlag + const_ns)
        return int(const_ns)

    # -- venue --------------------------------------------------------------------------------

    def _fill(self, o: RefOrder, ts: int, price: float, qty: float, liq: int) -> None:
        o.filled += qty
        rem = o.rem - qty
        if rem < self.lot * 1e-9:
            rem = 0.0
            o.status = "done"
        o.rem = rem
        if self.csize > 0.0:
            # A contract is worth -C/price coin: a buy receives its coin notional, a sell pays it.
            notional = qty * self.csize / price
            value = -notional
        else:
            notional = price * qty
            value = notional
        fee = notional * (self.maker_bps if liq == LIQ_MAKER else self.taker_bps) * 1e-4
        if o.side > 0:
            self.pos += qty
            self.cash -= value
        else:
            self.pos -= qty
            self.cash += value
        self.cash -= fee
        self.fees += fee
        self._fills.append(
            (
                ts, o.oid, ts - o.decided, ts - o.rest_ts, price, qty, fee, o.quote_px,
                o.mid_dec, self.vbook.mid(self.tick), self.pos, o.side, liq, -1, 0,
            )
        )  # fmt: skip
        self.c.fills += 1
        if liq == LIQ_MAKER:
            self.c.maker += 1
        else:
            self.c.taker += 1
        self.reports.append((ts + self._vleg(self.ack_ns), o.oid, o.side, qty, rem))

    def _join(self, o: RefOrder, px: int, ts: int) -> None:
        o.px = px
        o.rest_ts = ts
        o.status = "resting"
        o.cross_used = 0.0
        o.traded = 0.0
        crossing = self.vbook.opposite_through(o.side, px)
        if crossing and self.post_only:
            o.status = "done"
            o.rem = 0.0
            self.c.post_only_rejected += 1
            self.reports.append((ts + self._vleg(self.ack_ns), o.oid, o.side, 0.0, 0.0))
            return
        if crossing:
            taken = 0.0
            for n, (t, q) in enumerate(crossing):
                if o.rem <= 0.0:
                    break
                if n == WALK_MAX:
                    break
                take = min(q, o.rem)
                self._fill(o, ts, t * self.tick, take, LIQ_TAKER)
                taken += take
            o.cross_used = taken
        level = self.vbook.qty(o.side, px)
        o.front = level
        o.level = level

    def _arrivals(self, exch: int) -> None:
        for op in self.ops:
            if op.done:
                continue
            if op.arrive > exch:
                break
            op.done = True
            o = op.order
            if op.kind == ACT_PLACE:
                o.rem = op.qty
                self._join(o, op.px, op.arrive)
            elif op.kind == ACT_REPLACE:
                if o.status != "resting":
                    self.c.replaces_rejected += 1
                    continue
                keep = op.px == o.px and op.qty < o.rem
                o.rem = op.qty
                o.qty = o.filled + op.qty
                if not keep:
                    o.decided = op.decided
                    o.quote_px = op.px * self.tick
                    o.mid_dec = op.mid
                    self._join(o, op.px, op.arrive)
            else:
                if o.status == "resting":
                    o.status = "done"
                    o.rem = 0.0
                    self.c.cancels_done += 1
                else:
                    self.c.cancels_lost_race += 1

    def _queue(self, o: RefOrder, new: float) -> float:
        front, prev, traded = o.front, o.level, o.traded
        if self.probabilistic:
            chg = prev - new - traded
            if chg > 0.0:
                back = max(prev - traded - front, 0.0)
                fa = front**self.power
                fb = back**self.power
                p_ahead = fa / (fa + fb) if fa + fb > 0.0 else 0.0
                ahead = p_ahead * chg
                behind = chg - ahead
                if behind > back:
                    ahead += behind - back
                front = max(front - ahead, 0.0)
        return min(front, new)

    def _on_depth(self, side: int, t: int, qty: float, ts: int) -> None:
        qty = max(qty, 0.0)
        taken = 0.0
        for o in self.orders:
            if o.status != "resting":
                continue
            if o.side == side:
                if o.px == t:
                    o.front = self._queue(o, qty)
                    o.level = qty
                    o.traded = 0.0
                continue
            crossing = self.vbook.opposite_through(o.side, o.px) if self.crossing_fills else []
            if not crossing:
                o.cross_used = 0.0
                continue
            total = 0.0
            for _, q in crossing:
                total += q
            avail = total - o.cross_used - taken
            if avail > 0.0:
                f = min(o.rem, avail)
                o.cross_used += f
                o.front = 0.0
                taken += f
                self._fill(o, ts, o.px * self.tick, f, LIQ_MAKER)

    def _on_trade(self, aggressor: int, t: int, qty: float, ts: int) -> None:
        if qty <= 0.0:
            return
        avail = qty
        for o in self.orders:
            if o.status != "resting" or o.side == aggressor:
                continue
            through = t < o.px if o.side > 0 else t > o.px
            if t == o.px:
                front = o.front - qty
                o.traded += qty
                if front < 0.0:
                    f = min(o.rem, -front, avail)
                    o.front = 0.0
                    if f > 0.0:
                        avail -= f
                        self._fill(o, ts, o.px * self.tick, f, LIQ_MAKER)
                else:
                    o.front = front
            elif through:
                o.front = 0.0
                if self.through_order:
                    f = o.rem
                else:
                    f = min(o.rem, avail)
                    avail -= f
                if f > 0.0:
                    self._fill(o, ts, o.px * self.tick, f, LIQ_MAKER)

    # -- strategy -----------------------------------------------------------------------------

    def _deliver(self, now: int) -> None:
        while self.reports and self.reports[0][0] <= now:
            _, oid, side, qty, rem = self.reports.pop(0)
            self.pos_view += side * qty
            if rem <= 0.0:
                st = self.sides[side]
                if st.order is not None and st.order.oid == oid:
                    st.order = None

    def _purge(self, now: int) -> None:
        self.ops = [op for op in self.ops if not (op.done and op.ack <= now)]
        in_use = {id(op.order) for op in self.ops}
        in_use |= {id(s.order) for s in self.sides.values() if s.order is not None}
        self.orders = [o for o in self.orders if o.status != "done" or id(o) in in_use]

    def _bucket(self, name: str, now: int, cap: float, rate: float) -> float:
        last = self.token_ts[name]
        if last == NEVER:
            return cap
        level = self.tokens[name] + max(now - last, 0) * rate
        return min(level, cap)

    def _reason(self, action: int, now: int, st: RefSide) -> int | None:
        if now - st.last_act < self.min_interval_ns:
            return BLK_MIN_INTERVAL
        if len(self.ops) >= self.max_in_flight:
            return BLK_CONCURRENCY
        if action != ACT_PLACE and (
            self._bucket("replace", now, self.repl_cap, self.repl_rate) < 1.0
        ):
            return BLK_THROTTLE
        if self._bucket("venue", now, self.venue_cap, self.venue_rate) < 1.0:
            return BLK_THROTTLE
        return None

    def _block(self, side: int, action: int, reason: int, px: int, lots: int, now: int) -> None:
        st = self.sides[side]
        key = (action, px, lots, reason)
        if st.blocked == key:
            return
        st.blocked = key
        self.c.attempts[action] += 1
        self.c.blocks[reason] += 1
        self._blocks.append((now, reason, action, side, 0))

    def _attempt(self, side: int, action: int, px: int, lots: int, now: int, mid: float) -> None:
        st = self.sides[side]
        reason = self._reason(action, now, st)
        if reason is not None:
            self._block(side, action, reason, px, lots, now)
            return
        qty = lots * self.lot
        ack_leg = self._leg(self.ack_ns)
        if action == ACT_CANCEL:
            arrive = now + self._leg(self.cancel_ns)
        else:
            arrive = now + self._leg(self.entry_ns)
        arrive = max(arrive, self.last_arrival)
        self.last_arrival = arrive
        if action == ACT_PLACE:
            o = RefOrder(self.next_id, side, px, qty, now, px * self.tick, mid)
            self.next_id += 1
            self.orders.append(o)
            self.ops.append(RefOp(ACT_PLACE, o, arrive, arrive + ack_leg, px, now, qty, mid))
            st.order, st.px, st.lots, st.decided = o, px, lots, now
        elif action == ACT_REPLACE:
            assert st.order is not None
            o = st.order
            keep = px == st.px and lots < st.lots
            self.ops.append(RefOp(ACT_REPLACE, o, arrive, arrive + ack_leg, px, now, qty, mid))
            st.px, st.lots = px, lots
            if not keep:
                st.decided = now
        else:
            assert st.order is not None
            o = st.order
            px = st.px
            qty = 0.0
            self.ops.append(RefOp(ACT_CANCEL, o, arrive, arrive + ack_leg, px, now, 0.0, mid))
            st.order = None
        if action != ACT_PLACE:
            lvl = self._bucket("replace", now, self.repl_cap, self.repl_rate)
            self.tokens["replace"] = lvl - 1.0
            self.token_ts["replace"] = now
        self.tokens["venue"] = self._bucket("venue", now, self.venue_cap, self.venue_rate) - 1.0
        self.token_ts["venue"] = now
        st.last_act = now
        st.blocked = None
        self.c.attempts[action] += 1
        self.c.sent[action] += 1
        self._actions.append((now, o.oid, px * self.tick, qty, action, side))

    def _risk(self, side: int, qty: float, price: float) -> bool:
        new = self.pos_view + side * qty
        if abs(new) <= abs(self.pos_view):
            return False
        unit = self.csize if self.csize > 0.0 else price  # quote value of one unit of quantity
        return abs(new) > self.max_pos * (1.0 + 1e-9) or abs(new) * unit > self.max_notional

    def _target(self, mid: float, bb: int, ba: int) -> tuple[int, int, float]:
        tick = self.tick
        h = mid * (self.half_bps + self.spread_delta) * 1e-4
        h = h if h > tick else tick
        sigma_bps = math.sqrt(self.vol_var) * 1e4
        q = self.pos_view / self.order_qty
        skew = (0.0 - (0.0 - q * self.gamma * sigma_bps * sigma_bps * self.tau)) * 1e-4 * mid
        cap = self.max_delta_ratio * h
        skew = min(max(skew, -cap), cap)
        r = mid - skew
        b = math.floor((r - h) / tick + EPS)
        a = math.ceil((r + h) / tick - EPS)
        b = ba - 1 if b >= ba else b
        a = bb + 1 if a <= bb else a
        return b, a, h

    def _lots(self, side: int) -> int:
        qty = min(self.order_qty, self.impact_ratio * self.book.depth(side, self.levels))
        return math.floor(qty / self.lot + EPS)

    def _decide(self, now: int) -> None:
        bb, ba = self.book.best_bid(), self.book.best_ask()
        if bb is None or ba is None or bb >= ba:
            self.c.no_decision += 1
            return
        self.c.decisions += 1
        mid = self.book.mid(self.tick)
        if not self.vol_init:
            self.vol_init, self.vol_last_mid, self.vol_last_ts = True, mid, now
        elif now - self.vol_last_ts >= self.vol_sample_ns:
            dt = (now - self.vol_last_ts) / 1e9
            r = math.log(mid / self.vol_last_mid)
            alpha = 1.0 - 2.0 ** (-dt / self.vol_hl)
            self.vol_var = self.vol_var + alpha * (r * r / dt - self.vol_var)
            self.vol_last_mid, self.vol_last_ts = mid, now
        bt, at, h = self._target(mid, bb, ba)
        step = max(1, math.floor(self.max_delta_ratio * h / self.tick + EPS))
        order = [(1, bt), (-1, at)]
        if self.sides[-1].last_act < self.sides[1].last_act:
            order.reverse()  # the side that acted longer ago goes first
        for side, want in order:
            self._side(side, want, self._lots(side), step, bb, ba, now, mid)

    def _side(
        self, side: int, want: int, lots: int, step: int, bb: int, ba: int, now: int, mid: float
    ) -> None:
        st = self.sides[side]
        has = st.order is not None
        if lots <= 0:
            if has:
                self._attempt(side, ACT_CANCEL, st.px, 0, now, mid)
            return
        intent = None
        px = want
        if has:
            px = min(max(want, st.px - step), st.px + step)
            if side > 0 and px >= ba:
                px = ba - 1
            if side < 0 and px <= bb:
                px = bb + 1
            if px != st.px or lots != st.lots or now - st.decided >= self.tail_age_ns:
                intent = ACT_REPLACE
        else:
            intent = ACT_PLACE
        if self._risk(side, lots * self.lot, px * self.tick):
            if intent is not None:
                self._block(side, intent, BLK_RISK, px, lots, now)
            if has:
                self._attempt(side, ACT_CANCEL, st.px, 0, now, mid)
            return
        if intent is not None:
            self._attempt(side, intent, px, lots, now, mid)

    # -- loop ---------------------------------------------------------------------------------

    def _mark(self, ts: int) -> None:
        bids = [o.px for o in self.orders if o.status == "resting" and o.side > 0]
        asks = [o.px for o in self.orders if o.status == "resting" and o.side < 0]
        bb, ba = self.vbook.best_bid(), self.vbook.best_ask()
        self._marks.append(
            (
                ts, self.vbook.mid(self.tick), self.pos, self.cash,
                max(bids) * self.tick if bids else math.nan,
                min(asks) * self.tick if asks else math.nan,
                bb * self.tick if bb is not None else math.nan,
                ba * self.tick if ba is not None else math.nan,
                math.sqrt(self.vol_var),
            )
        )  # fmt: skip

    def _timeline(self, events: list[np.void]) -> list[tuple[str, np.void, int]]:
        """The two cursors' merged timeline of ``events`` (docs/CORE.md, "Two clocks"), by
        sorting every venue and strategy item of them at once."""
        keyed: list[tuple[int, int, int, np.void, int]] = []
        for e in events:
            local, exch = int(e["local_ts"]), int(e["exch_ts"])
            self.lmax = local if self.lmax is None else max(self.lmax, local)
            vt = exch
            if vt < self.lmax - self.window_ns:
                vt = self.lmax - self.window_ns
                self.c.clamped += 1
            keyed.append((vt, 0, self.seq, e, vt))  # the venue's item, at its venue time
            keyed.append((self.lmax, 1, self.seq, e, exch))  # the strategy's
            self.seq += 1
        keyed.sort(key=lambda k: (k[0], k[1], k[2]))
        items: list[tuple[str, np.void, int]] = []
        k = 0
        while k < len(keyed):
            _, typ, seq, e, exch = keyed[k]
            if typ == 0 and k + 1 < len(keyed) and keyed[k + 1][1:3] == (1, seq):
                items.append(("VS", e, exch))
                k += 2
            else:
                items.append(("V" if typ == 0 else "S", e, exch))
                k += 1
        return items

    def step(self, part: str, e: np.void, exch: int) -> None:
        """One item: ``part`` is "V" (venue), "S" (strategy, venue clock synced to its local
        time), "VS" (both) or "FILE" (both, the file-order model)."""
        local, kind, side = int(e["local_ts"]), int(e["kind"]), int(e["side"])
        on_v = part in ("V", "VS", "FILE")
        on_s = part in ("S", "VS", "FILE")
        sync = part in ("S", "VS")
        if self.pending is not None:
            # the previous event ended a batch (one local_ts) unless this one continues it
            ts, self.pending = self.pending, None
            if not (on_s and local == ts and (self.per_ts or kind == KIND_SNAPSHOT)):
                self._decide(ts)
        if not self.started:
            self.next_mark = -((-exch) // self.mark_ns) * self.mark_ns
            self.started = True
        lag = max(local - exch, 0)
        t = tick_of(float(e["price"]), self.tick)
        qty = float(e["qty"])
        if on_v:
            while self.next_mark <= exch:
                self._mark(self.next_mark)
                self.next_mark += self.mark_ns
            self.vlag = lag
            self._arrivals(exch)
            if kind == KIND_TRADE:
                self._on_trade(side, t, qty, exch)
            else:
                self.vbook.apply(kind, side, t, qty)
                if kind in (KIND_DEPTH, KIND_SNAPSHOT):
                    self._on_depth(side, t, qty, exch)
            self.last_exch = exch
        if not on_s:
            return
        self.lag = lag
        if sync:
            self.vlag = lag
            while self.next_mark <= local:
                self._mark(self.next_mark)
                self.next_mark += self.mark_ns
            self._arrivals(local)
        if kind != KIND_TRADE and part != "FILE":
            self.book.apply(kind, side, t, qty)
        self._deliver(local)
        self._purge(local)
        if self.per_ts or kind in (KIND_CLEAR, KIND_SNAPSHOT):
            self.pending = local
        else:
            self._decide(local)
        self.c.events += 1

    def run(self, events: np.ndarray, flush: bool = True) -> RefResult:
        """Like ``Engine.run``: with ``flush=False`` the exchange-order model holds the events
        back until a later call flushes them (the engine holds back less; what both produce
        over a run is the same), and the last batch's decision waits for the next event."""
        start = (len(self._fills), len(self._actions), len(self._blocks), len(self._marks))
        if not self.exchange_order:
            for e in events:
                self.step("FILE", e, int(e["exch_ts"]))
        else:
            self.held.extend(events)
            if flush:
                held, self.held = self.held, []
                for part, e, exch in self._timeline(held):
                    self.step(part, e, exch)
        if flush and self.pending is not None:
            # the end of a run or an iteration: the last batch is complete
            ts, self.pending = self.pending, None
            self._decide(ts)
        return RefResult(
            np.array(self._fills[start[0] :], dtype=FILL_DTYPE),
            np.array(self._actions[start[1] :], dtype=ACTION_DTYPE),
            np.array(self._blocks[start[2] :], dtype=BLOCK_DTYPE),
            np.array(self._marks[start[3] :], dtype=MARK_DTYPE),
        )

    @property
    def position(self) -> float:
        return self.pos

    def counters(self) -> dict[str, Any]:
        c = self.c
        return {
            "events": c.events,
            "decisions": c.decisions,
            "attempts": {ACTION_NAMES[a]: n for a, n in c.attempts.items()},
            "blocks": {BLOCK_REASONS[r]: n for r, n in c.blocks.items()},
            "fills": c.fills,
            "maker": c.maker,
            "taker": c.taker,
            "places": c.sent[ACT_PLACE],
            "replaces": c.sent[ACT_REPLACE],
            "cancels": c.sent[ACT_CANCEL],
            "cancels_done": c.cancels_done,
            "cancels_lost_race": c.cancels_lost_race,
            "replaces_rejected": c.replaces_rejected,
            "no_decision": c.no_decision,
            "post_only_rejected": c.post_only_rejected,
            "late_events_clamped": c.clamped,
        }
