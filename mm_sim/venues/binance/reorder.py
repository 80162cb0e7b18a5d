"""A small reorder window keyed on exchange time, between the live client and the engine.

Why: trades and depth diffs come on different streams (on USD-M futures even on different
connections), and a trade can arrive after the diff that already removed its liquidity (22.8 %
of spot and 7.7 % of futures trades in the real captures). Processed in arrival order, the
engine's venue side would see the level depleted by the diff and then again by the trade.
Replay consumes the venue side in exchange-time order; this buffer gives the live path the same
order at the price of a bounded delay.

Rule: an event is released once the (venue-corrected) clock has passed its exchange time plus
the window ``W``; released events come out sorted by exchange time, trades before book events
at the same millisecond (a trade printed in the millisecond a diff was published belongs before
it), arrival order otherwise. An event waits at most ``W`` after its exchange time, so at most
``W`` minus its feed lag after its arrival. One that arrives more than ``W`` late can no longer
be put in its place: it is released at once with its exchange time raised to the last released
one (exchange times never go back) and counted as ``late``. The hold each event had (release
time minus receive time, on the same clock) is the latency the window adds, and is reported.

Pure: no clock of its own (``now_ns`` is passed in), no I/O; tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mm_sim.events import EVENT_DTYPE, KIND_TRADE
from mm_sim.venues.binance.processor import join_events

_HOLD_KEEP = 1 << 16  # hold samples kept for the report (a ring)


class ReorderBuffer:
    """Events in, events sorted by exchange time out, each held at most ``window_ns``."""

    def __init__(self, window_ns: int) -> None:
        if window_ns < 0:
            raise ValueError(f"reorder window must be >= 0, got {window_ns}")
        self.window_ns = int(window_ns)
        self._held: list[np.ndarray] = []
        self._n_held = 0
        self.last_exch = 0  # exchange time of the last event released
        self.released = 0
        self.late = 0  # arrived after events with later exchange times were released
        self.reordered = 0  # released ahead of an event that had arrived before them
        self._holds = np.zeros(_HOLD_KEEP, dtype=np.int64)
        self._n_holds = 0

    def __len__(self) -> int:
        return self._n_held

    def push(self, events: np.ndarray, now_ns: int) -> np.ndarray:
        """Take newly arrived events (in arrival order); return what is due at ``now_ns``."""
        if len(events):
            self._held.append(events)
            self._n_held += len(events)
        return self.release(now_ns)

    def next_due_ns(self) -> int | None:
        """When the earliest held event becomes due (clock time), or None when empty."""
        if not self._n_held:
            return None
        return min(int(p["exch_ts"].min()) for p in self._held) + self.window_ns

    def release(self, now_ns: int) -> np.ndarray:
        """Events whose exchange time plus the window has passed, sorted by exchange time."""
        if not self._n_held:
            return np.empty(0, dtype=EVENT_DTYPE)
        ev = join_events(self._held)
        due = ev["exch_ts"] <= now_ns - self.window_ns
        if not due.any():
            self._held = [ev]
            return np.empty(0, dtype=EVENT_DTYPE)
        out = ev[due]
        rest = ev[~due]
        self._held = [rest] if len(rest) else []
        self._n_held = len(rest)
        return self._order(out, now_ns)

    def flush(self, now_ns: int) -> np.ndarray:
        """Everything held, in order (the end of a run)."""
        if not self._n_held:
            return np.empty(0, dtype=EVENT_DTYPE)
        ev = join_events(self._held)
        self._held, self._n_held = [], 0
        return self._order(ev, now_ns)

    def _order(self, out: np.ndarray, now_ns: int) -> np.ndarray:
        exch = out["exch_ts"]
        book_first = (out["kind"] != KIND_TRADE).astype(np.int8)
        order = np.lexsort((np.arange(len(out)), book_first, exch))  # stable: arrival last key
        if np.any(order[1:] < order[:-1]):
            # Moved ahead of at least one event that had arrived before them.
            self.reordered += int(np.count_nonzero(order > np.arange(len(order))))
            out = out[order]
        else:
            out = out.copy()
        low = out["exch_ts"] < self.last_exch
        if low.any():
            self.late += int(np.count_nonzero(low))
            out["exch_ts"][low] = self.last_exch
        self.last_exch = int(out["exch_ts"][-1])
        self.released += len(out)
        self._note_holds(now_ns - out["local_ts"])
        return out

    def _note_holds(self, holds: np.ndarray) -> None:
        n = len(holds)
        if n >= _HOLD_KEEP:
            self._holds[:] = holds[-_HOLD_KEEP:]
            self._n_holds += n
            return
        i = self._n_holds % _HOLD_KEEP
        first = min(n, _HOLD_KEEP - i)
        self._holds[i : i + first] = holds[:first]
        self._holds[: n - first] = holds[first:]
        self._n_holds += n

    def report(self) -> dict[str, Any]:
        """The window, what it did, and the latency it added (hold p50/p99/max, ms)."""
        kept = self._holds[: min(self._n_holds, _HOLD_KEEP)]
        hold: dict[str, float | None] = {"p50": None, "p99": None, "max": None}
        if len(kept):
            ms = np.maximum(kept, 0) / 1e6
            hold = {
                "p50": round(float(np.percentile(ms, 50)), 3),
                "p99": round(float(np.percentile(ms, 99)), 3),
                "max": round(float(ms.max()), 3),
            }
        return {
            "window_ms": self.window_ns / 1e6,
            "released": self.released,
            "reordered": self.reordered,
            "late": self.late,
            "held_now": self._n_held,
            "added_latency_ms": hold,
        }


class ReorderingSink:
    """Push mode through the window: each frame's events go into ``buffer``, what is due goes
    on to ``sink`` at once, and a timer releases held events when they fall due (no frame may
    come to push them out). ``arrivals`` (receive times of the frames in a call) are handed on
    with the call that empties the buffer: until then some of those frames' events still wait.

    ``clock`` is the venue-corrected clock (ns, the events' exchange time base); ``call_later``
    is the event loop's (wall seconds), ``speed`` the exchange clock's rate against the wall."""

    def __init__(
        self,
        buffer: ReorderBuffer,
        sink: Callable[[np.ndarray, list[int]], None],
        clock: Callable[[], int],
        call_later: Callable[[float, Callable[[], None]], Any],
        speed: float = 1.0,
    ) -> None:
        self.buffer = buffer
        self.sink = sink
        self.clock = clock
        self.call_later = call_later
        self.speed = speed
        self._arrivals: list[int] = []
        self._timer: Any = None
        self._timer_due: int | None = None

    def __call__(self, events: np.ndarray, arrivals: list[int]) -> None:
        self._arrivals.extend(arrivals)
        self._emit(self.buffer.push(events, self.clock()))

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = None
        self._emit(self.buffer.release(self.clock()))

    def _emit(self, out: np.ndarray) -> None:
        if len(out):
            arrivals: list[int] = []
            if not len(self.buffer):
                arrivals, self._arrivals = self._arrivals, []
            self.sink(out, arrivals)
        due = self.buffer.next_due_ns()
        if due is not None and due != self._timer_due:
            if self._timer is not None:
                self._timer.cancel()
            wait_s = max(0.0, (due - self.clock()) / self.speed / 1e9)
            self._timer = self.call_later(wait_s, self._on_timer)
            self._timer_due = due

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


__all__ = ["ReorderBuffer", "ReorderingSink"]
