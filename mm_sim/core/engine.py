"""The ``Engine``: owns the core's state arrays and runs the driver (``driver.run_chunk``) on them.

Why a class around the kernels: the state (book, venue, strategy, account, counters) lives in
numpy arrays the kernels mutate in place; the Engine allocates them from a profile, binds them
into the kernels' bundles, grows output buffers when a slice produces more records than they hold,
and checkpoints / restores the whole state (docs/CORE.md, "API" and "State, checkpoint").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mm_sim import kernel_cache
from mm_sim.config import (
    EventOrder,
    Overrides,
    Profile,
)
from mm_sim.core import (
    account,
    limiter,
    match,
    quote,
    rng,
)
from mm_sim.core.account import (
    A_CASH,
    A_POS,
    C_ATTEMPT0,
    C_BLOCK0,
    C_DECISIONS,
    C_EVENTS,
    C_NO_DECISION,
    C_SENT0,
    C_SLOT_EXHAUSTED,
)
from mm_sim.core.book import (
    ST_DROPPED,
    ST_RECENTRES,
    make_book,
    mid_price,
)

# Kernels never allocate, so they are compiled without numba's reference counting: passing
# state arrays between kernels then costs nothing (docs/CORE.md, "Speed").
from mm_sim.core.driver import run_chunk, write_mark
from mm_sim.core.engine_params import make_params, override_values
from mm_sim.core.jitcall import entry_point
from mm_sim.core.params import (
    DECISION_MARGIN,
    G_SIZE,
    G_VCLOCK,
    K_CSIZE,
    K_TICK,
    NO_ACTIONS,
    NO_BLOCKS,
    NO_FILLS,
    NO_MARKS,
    STATE_VERSION,
    Ctl,
)
from mm_sim.core.quote import (
    QMF_SIZE,
    QMI_SIZE,
)
from mm_sim.core.records import (
    ACTION_DTYPE,
    ACTION_NAMES,
    BLOCK_DTYPE,
    BLOCK_REASONS,
    FILL_DTYPE,
    MARK_DTYPE,
    copy_rows,
)
from mm_sim.core.timeline import TIMELINE_KEYS, Timeline
from mm_sim.core.venue_state import (
    O_CURRENT,
    O_ID,
    O_PX,
    O_REFS,
    O_SIDE,
    O_STATUS,
    OF_CROSS_USED,
    OF_FILLED,
    OF_FRONT,
    OF_QTY,
    OF_REM,
    VENUE_KEYS,
    VS_NLIVE,
    VSF_POS_VIEW,
    WALK_MAX,
    BookArrays,
    Out,
    Venue,
)
from mm_sim.errors import UserError
from mm_sim.events import (
    EVENT_DTYPE,
    Instrument,
)


@dataclass
class ChunkResult:
    """Records produced by one ``Engine.run`` call (copies owned by the caller)."""

    fills: np.ndarray
    actions: np.ndarray
    blocks: np.ndarray
    marks: np.ndarray


# run_chunk's compiled entry point, made on the first call (Engine._kernel; core/jitcall.py)
_ENTRY: list[Any] = []

TIMELINE_SLICE = 16384  # events merged per timeline call in ``run``
# run_chunk's timeline arrays in the one-cursor model
NO_TIMELINE = tuple(np.zeros(0, dtype=np.int64) for _ in range(5))

_STATE_KEYS = (
    "version", "p", "bid", "ask", "bst", "sbid", "sask", "sbst", "g", "vol_f", "vol_i", "lf",
    "li", "si",    "oi", "of", "live", "pi", "pf", "ni", "nf", "vs", "vsf", "acc", "cnt", "rng",
)  # fmt: skip


class Engine:
    """One simulated strategy + venue over one instrument; feed it consecutive event slices."""

    def __init__(
        self,
        profile: Profile,
        overrides: Overrides,
        instrument: Instrument,
        seed: int,
        *,
        n_ticks: int = 1 << 18,
        report_capacity: int = 4096,
        out_capacity: int = 4096,
    ) -> None:
        self.profile = profile
        self.instrument = instrument
        self.seed = int(seed)
        self._p = make_params(profile, overrides, instrument)
        book = make_book(self._p[K_TICK], n_ticks)
        # Two clocks: the venue and the strategy each keep a book, fed by the timeline's items
        # in exchange and local order; in the file-order model one book serves both.
        exchange_order = profile.matching.event_order == EventOrder.exchange
        window = round(profile.matching.reorder_window_ms * 1e6)
        sbook = make_book(self._p[K_TICK], n_ticks) if exchange_order else book
        self._timeline = Timeline(window, self._p[K_TICK]) if exchange_order else None
        self._live_window = round(profile.matching.live_reorder_window_ms * 1e6)
        max_ops = profile.limiter.max_in_flight + 2
        venue = match.make_venue(max_ops + 4, max_ops, report_capacity)
        lf, li = limiter.make_buckets()
        g = np.zeros(G_SIZE, dtype=np.int64)
        self._s: dict[str, np.ndarray] = {
            "version": np.array([STATE_VERSION], dtype=np.int64),
            "p": self._p,
            "bid": book.bid,
            "ask": book.ask,
            "bst": book.st,
            "sbid": sbook.bid,
            "sask": sbook.ask,
            "sbst": sbook.st,
            "g": g,
            "vol_f": np.zeros(quote.VOL_F_SIZE),
            "vol_i": np.zeros(quote.VOL_I_SIZE, dtype=np.int64),
            "lf": lf,
            "li": li,
            "si": limiter.make_side_table(),
            **venue,
            "acc": account.make_account(self._p[K_CSIZE]),
            "cnt": account.make_counters(),
            "rng": rng.make_rng(self.seed),
        }
        # Fills one event can produce: each arriving action may walk WALK_MAX levels, and each
        # live order may be filled once by the event itself.
        self._fill_margin = (max_ops + 1) * (WALK_MAX + 1) + 2 * (max_ops + 4)
        cap = max(int(out_capacity), 1)
        self._out = {
            "fills": np.zeros(max(cap, 2 * self._fill_margin), dtype=FILL_DTYPE),
            "actions": np.zeros(max(cap, 4 * DECISION_MARGIN), dtype=ACTION_DTYPE),
            "blocks": np.zeros(max(cap, 4 * DECISION_MARGIN), dtype=BLOCK_DTYPE),
            "marks": np.zeros(cap, dtype=MARK_DTYPE),
        }
        self._nout = np.zeros(4, dtype=np.int64)
        # Memo of the last quote targets: a cache rebuilt at every run() call, not state.
        self._qmi = np.zeros(QMI_SIZE, dtype=np.int64)
        self._qmf = np.zeros(QMF_SIZE)
        # run_chunk's arguments after (events, start, tl, window, final, live), bound again
        # whenever a buffer grows
        self._args = self._bind_args()

    # -- running ------------------------------------------------------------------------------

    def run(self, events: np.ndarray, flush: bool = True) -> ChunkResult:
        """Process this slice of the feed; state carries over between calls.

        In the exchange-order model (``matching.event_order``) the venue may have to see an
        event of a later slice before some of this one (timeline.py): ``flush=False`` holds
        back what a later event could precede (at most ``matching.reorder_window_ms`` of
        feed) for the next call, so results do not depend on how the feed is sliced;
        ``flush=True`` (the end of a run or an iteration) processes everything, and the
        strategy decides on the last batch (local timestamp) at once instead of when the next
        call shows whether it continues: a caller must not cut a batch with ``flush=True``
        (time-based cuts never do).
        """
        ev = np.asarray(events)
        if ev.dtype != EVENT_DTYPE:
            raise TypeError(f"expected EVENT_DTYPE records, got {ev.dtype}")
        if ev.ndim != 1:
            raise TypeError("expected a 1-d slice of events")
        # One compiled signature only: a read-only memory map, a strided view, an unaligned
        # buffer or a dtype that lost its "aligned" flag on disk would each make numba compile
        # the driver again (and its entry point, below, would misread them).
        if not (ev.flags.c_contiguous and ev.flags.writeable and ev.flags.aligned):
            ev = np.array(ev)
        if not ev.dtype.isalignedstruct:
            ev = ev.view(EVENT_DTYPE)
        out = self._out
        nout = self._nout
        nout[:] = 0
        tl = self._timeline
        if tl is None:
            self._run_items(ev, flush)
        else:
            # The timeline in bounded slices: its buffers stay small and warm (fresh pages
            # cost more than the merge itself). The window is the replay one unless run_live
            # set the live one: widened with events held, the venue's clock could go back.
            for lo in range(0, max(len(ev), 1), TIMELINE_SLICE):
                last = flush and lo + TIMELINE_SLICE >= len(ev)
                tl.take(ev[lo : lo + TIMELINE_SLICE])
                self._run_timeline(last, False, int(last))
        return ChunkResult(
            fills=copy_rows(out["fills"][: nout[NO_FILLS]]),
            actions=copy_rows(out["actions"][: nout[NO_ACTIONS]]),
            blocks=copy_rows(out["blocks"][: nout[NO_BLOCKS]]),
            marks=copy_rows(out["marks"][: nout[NO_MARKS]]),
        )

    def _kernel(self) -> Any:
        """``run_chunk``'s entry point: the dispatcher's typing of ~28 arrays per call was
        2 us, a tenth of a soak's 1,340-event call. Made once per process: every engine's
        bound arrays are made here with the same dtypes and layout (a grown buffer too), so
        their types never differ, and looking the entry point up per engine cost 21 us, a
        sixth of a 2,000-event feed's run. Callers pass 1-d, C-contiguous, writeable,
        aligned EVENT_DTYPE arrays."""
        if not _ENTRY:
            _ENTRY.append(entry_point(
                run_chunk, np.empty(1, dtype=EVENT_DTYPE), 0, NO_TIMELINE, 0, False, False,
                *self._args, 1,
            ))  # fmt: skip
        return _ENTRY[0]

    def _run_items(self, ev: np.ndarray, settle: bool) -> None:
        """One cursor: the items are the events themselves."""
        kernel = self._kernel()
        i = 0
        n = len(ev)
        while i < n:
            i = kernel(ev, i, NO_TIMELINE, 0, False, False, *self._args, int(settle))
            if i < n:
                self._grow()

    def _run_timeline(self, final: bool, live: bool, settle: int) -> None:
        """Two cursors: the driver walks the timeline's buffer until no item can go out."""
        kernel = self._kernel()
        tl = self._timeline
        assert tl is not None
        args = (tl.buf, 0, tl.arrays(), tl.window, final, live)
        while not kernel(*args, *self._args, settle):
            self._grow()

    def run_live(self, events: np.ndarray) -> np.ndarray:
        """``run`` for a live feed's few events at a time, without ``run``'s per-call overhead.

        Why: one live message (a trade, a depth diff) is a handful of events, and ``run``'s input
        checks, output copies and the numba dispatcher (typing every state array per call) cost
        several times the kernel itself on that path. Same kernel, same state, same records as
        ``run`` on the same events, called through its compiled entry point (``core.jitcall``).
        The live client builds 1-d, C-contiguous, writeable, aligned EVENT_DTYPE arrays; any
        other EVENT_DTYPE array is copied into one first. The records stay in the engine's
        buffers until the next ``run`` or ``run_live``; ``live_result`` copies them out. Returns
        the output counts (fills, actions, blocks, marks), valid until the next call.
        """
        f = events.flags
        if not (f.c_contiguous and f.writeable and f.aligned and events.dtype == EVENT_DTYPE):
            # The entry point would read any array as the kind it was made for.
            if events.dtype != EVENT_DTYPE or events.ndim != 1:
                raise TypeError(f"expected a 1-d slice of EVENT_DTYPE records, got {events.dtype}")
            events = np.array(events)
        nout = self._nout
        nout.fill(0)  # (a slice assignment costs several times more on this path)
        tl = self._timeline
        if tl is not None:
            # Decisions on arrival; the venue follows once no later event can precede (within
            # the live window, which keeps the venue's lag behind the strategy small).
            tl.window = self._live_window
            tl.take(events)
            self._run_timeline(False, True, 1)
            return nout
        # settle: a message's decision is taken in this call, not when the next one comes
        self._run_items(events, True)
        return nout

    def _bind_args(self) -> tuple[BookArrays, BookArrays, Ctl, Venue, Out, int]:
        """The engine's arrays in the kernels' bundles (the arrays themselves, not copies)."""
        s = self._s
        o = self._out
        book = (s["bid"], s["ask"], s["bst"])
        sbook = book if s["sbid"] is s["bid"] else (s["sbid"], s["sask"], s["sbst"])
        ctl = (s["p"], s["g"], s["vol_f"], s["vol_i"], self._qmi, self._qmf, s["lf"], s["li"])
        venue = tuple(s[k] for k in VENUE_KEYS)
        out = (o["fills"], o["actions"], o["blocks"], o["marks"], self._nout)
        return book, sbook, ctl, venue, out, self._fill_margin

    def live_result(self) -> ChunkResult:
        """Copies of the records produced by the last ``run_live`` call."""
        out = self._out
        nout = self._nout
        return ChunkResult(
            fills=copy_rows(out["fills"][: nout[NO_FILLS]]),
            actions=copy_rows(out["actions"][: nout[NO_ACTIONS]]),
            blocks=copy_rows(out["blocks"][: nout[NO_BLOCKS]]),
            marks=copy_rows(out["marks"][: nout[NO_MARKS]]),
        )

    def _grow(self) -> None:
        """Double every buffer that is short of room for one more event."""
        need = {
            "fills": self._fill_margin,
            "actions": DECISION_MARGIN,
            "blocks": DECISION_MARGIN,
            "marks": 1,
        }
        short = [
            name
            for idx, name in enumerate(("fills", "actions", "blocks", "marks"))
            if len(self._out[name]) - self._nout[idx] < need[name]
        ]
        # An item that makes several marks due stops the kernel with room for one left.
        for name in short or ["marks"]:
            buf = self._out[name]
            bigger = np.zeros(2 * len(buf), dtype=buf.dtype)
            bigger[: len(buf)] = buf
            self._out[name] = bigger
        self._args = self._bind_args()

    def set_overrides(self, o: Overrides) -> None:
        """Hot-swap the runtime overrides; they apply from the next event processed."""
        for idx, val in override_values(o).items():
            self._p[idx] = val

    # -- views --------------------------------------------------------------------------------

    def mark_now(self) -> np.ndarray:
        """One MARK_DTYPE record of the current state, stamped with the venue's clock (the last
        event's exch_ts; in the exchange-order model, the later of that and the local time the
        venue was last synced to)."""
        rec = np.zeros(1, dtype=MARK_DTYPE)
        book, _sbook, ctl, venue, _out, _margin = self._args
        write_mark(rec, 0, self._s["g"][G_VCLOCK], book, ctl, venue)
        return rec

    @property
    def position(self) -> float:
        return float(self._s["acc"][A_POS])

    @property
    def cash(self) -> float:
        return float(self._s["acc"][A_CASH])

    @property
    def mid(self) -> float:
        return float(mid_price(self._s["bst"], self._p[K_TICK]))

    @property
    def position_view(self) -> float:
        """Position as the strategy knows it (fill reports lag by the ack latency)."""
        return float(self._s["vsf"][VSF_POS_VIEW])

    def account(self) -> dict[str, float]:
        names = [n for n in dir(account) if n.startswith("A_") and n != "A_SIZE"]
        acc = self._s["acc"]
        return {n[2:].lower(): float(acc[getattr(account, n)]) for n in names}

    def counters(self) -> dict[str, Any]:
        c = self._s["cnt"]
        acts = {name: int(c[C_ATTEMPT0 + code]) for code, name in ACTION_NAMES.items()}
        sent = {name: int(c[C_SENT0 + code]) for code, name in ACTION_NAMES.items()}
        return {
            "events": int(c[C_EVENTS]),
            "decisions": int(c[C_DECISIONS]),
            "attempts": acts,
            "blocks": {r: int(c[C_BLOCK0 + i]) for i, r in enumerate(BLOCK_REASONS)},
            "fills": int(c[account.C_FILLS]),
            "maker": int(c[account.C_MAKER]),
            "taker": int(c[account.C_TAKER]),
            "places": sent["place"],
            "replaces": sent["replace"],
            "cancels": sent["cancel"],
            "dropped": int(self._s["bst"][ST_DROPPED]),
            "other": {
                "cancels_done": int(c[account.C_CANCEL_DONE]),
                "cancels_lost_race": int(c[account.C_CANCEL_LOST]),
                "replaces_rejected": int(c[account.C_REPLACE_REJECTED]),
                "no_decision": int(c[C_NO_DECISION]),
                "reports_forced": int(c[account.C_REPORT_FORCED]),
                "walks_truncated": int(c[account.C_WALK_TRUNCATED]),
                "slots_exhausted": int(c[C_SLOT_EXHAUSTED]),
                "book_recentres": int(self._s["bst"][ST_RECENTRES]),
                "post_only_rejected": int(c[account.C_POST_ONLY_REJECTED]),
                "late_events_clamped": self._timeline.clamped if self._timeline else 0,
            },
        }

    def orders(self) -> list[dict[str, Any]]:
        """Orders currently known to the venue (pending, resting or awaiting release)."""
        s = self._s
        oi, of = s["oi"], s["of"]
        out = []
        for m in range(int(s["vs"][VS_NLIVE])):
            k = int(s["live"][m])
            out.append(
                {
                    "order_id": int(oi[k, O_ID]),
                    "side": int(oi[k, O_SIDE]),
                    "status": int(oi[k, O_STATUS]),
                    "price": float(oi[k, O_PX] * self._p[K_TICK]),
                    "qty": float(of[k, OF_QTY]),
                    "filled": float(of[k, OF_FILLED]),
                    "remaining": float(of[k, OF_REM]),
                    "front": float(of[k, OF_FRONT]),
                    "current": bool(oi[k, O_CURRENT]),
                    "refs": int(oi[k, O_REFS]),
                    "cross_used": float(of[k, OF_CROSS_USED]),
                }
            )
        return out

    # -- checkpoint ---------------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """A deep copy of the complete state (parameters and overrides in force included)."""
        d = {k: self._s[k].copy() for k in _STATE_KEYS}
        if self._timeline is not None:
            d.update(self._timeline.pending())
        return d

    def load_state(self, d: dict[str, np.ndarray]) -> None:
        """Restore a ``state_arrays`` snapshot taken from an engine built the same way."""
        missing = [k for k in _STATE_KEYS if k not in d]
        if missing:
            raise UserError(f"checkpoint is missing core state {missing}")
        if int(np.asarray(d["version"])[0]) != STATE_VERSION:
            raise UserError(
                f"checkpoint core state version {int(np.asarray(d['version'])[0])} "
                f"!= {STATE_VERSION}; it was written by another mm_sim version"
            )
        for k in _STATE_KEYS:
            src = np.asarray(d[k])
            dst = self._s[k]
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise UserError(
                    f"checkpoint core state '{k}' has shape {src.shape} {src.dtype}, this engine "
                    f"expects {dst.shape} {dst.dtype} (different profile or engine size)"
                )
        if self._timeline is not None:
            lost = [k for k in TIMELINE_KEYS if k not in d]
            if lost:
                raise UserError(f"checkpoint is missing the timeline state {lost}")
            self._timeline.load({k: d[k] for k in TIMELINE_KEYS})
        for k in _STATE_KEYS:
            self._s[k][...] = d[k]


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
