"""A feed's clock model: how far the recorder's clock (``local_ts``) is off the exchange's.

Why it matters: a recorder whose clock runs behind the exchange stamps messages as received
before they were sent. Replayed as is, the feed lag ``local_ts - exch_ts`` is negative, so every
latency measured against it collapses, fill reports reach the strategy late, and ``ws_lag``
reads better than ideal. The hftbacktest captures in ../shared/data run about 1.27 s behind.

What is estimated: ``shift_ns``, the amount to ADD to every ``local_ts`` (the exchange clock is
the reference; the recorder's clock is corrected), chosen so that the ``QUANTILE`` (1 %) quantile
of the feed lag equals ``FLOOR_NS`` (1 ms) — and never negative::

    shift = max(0, FLOOR - p1(local_ts - exch_ts))

- Samples: depth and trade events (the ones that move the book and fill orders), one per
  receive timestamp, so a diff touching 40 levels counts once, like the message it came from.
- Why the 1 % quantile and not the minimum: one mis-stamped message would move the minimum
  (and so every latency in the run) by its error; the p1 ignores up to 1 % of outliers.
- Why never negative: with one-way timestamps a clock running *ahead* of the exchange cannot be
  told from genuine network latency, so only lags below the floor are treated as a clock error.
  The corrected lags are therefore a lower bound: ``FLOOR`` plus the spread of the real latency.
- One-clock feeds (``local_ts`` copies ``exch_ts``, e.g. LOBSTER or Binance ``jsonl`` input):
  when at least half the samples have a lag of exactly 0 there is no second clock: shift 0.
- Generated (synthetic) feeds: their clocks are exact by construction: shift 0.

Where it is stored: the ``clock`` object of the feed's sidecar JSON, written by
:class:`~mm_sim.events.FeedWriter` for every feed it writes (converters, ``mm_sim record``, the
sweep's generated days). A sidecar written before clock models existed has none: the model is
then estimated when the feed is opened, by the same rule on up to ``OPEN_BLOCKS`` evenly spread
blocks of events (a fraction of a second, in bounded memory), and says so in ``estimated``.

How it is applied: replay adds the chosen shift to ``local_ts`` of every chunk it hands to the
engine (``mm_sim.runtime.replay``), so the core, ``ws_lag`` and every report see corrected
clocks. ``--clock auto`` (default) applies the feed's model, ``--clock raw`` none, ``--clock MS``
that many milliseconds. The applied shift is part of the run's identity in ``run.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.errors import UserError
from mm_sim.events import KIND_DEPTH, KIND_TRADE, Feed, sidecar_path

FLOOR_NS = 1_000_000  # the p1 of the corrected feed lag: 1 ms
QUANTILE = 0.01
ONE_CLOCK_SHARE = 0.5  # at least this share of lags exactly 0: local_ts copies exch_ts
MAX_SAMPLES = 1 << 20  # beyond: keep every 2nd sample (then every 4th ...), deterministically
OPEN_BLOCKS = 64  # estimate on open: this many evenly spread blocks ...
OPEN_BLOCK = 1 << 14  # ... of this many events
MAX_SHIFT_MS = 86_400_000.0  # a --clock shift beyond a day is a typo

METHOD_FLOOR = "p1-floor"
METHOD_ONE_CLOCK = "one-clock"
METHOD_GENERATED = "generated"
METHOD_NO_SAMPLES = "no-samples"

MODE_AUTO = "auto"
MODE_RAW = "raw"
MODE_MANUAL = "manual"


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(float(ns) / 1e6, 3)


@dataclass(frozen=True)
class ClockModel:
    """The estimate stored in a sidecar (see the module docstring for the rule)."""

    shift_ns: int
    method: str
    floor_ns: int = FLOOR_NS
    quantile: float = QUANTILE
    samples: int = 0
    lag_ms_raw: dict[str, float | None] = field(default_factory=dict)  # p1 / p50 / p99
    estimated: str = "when the feed was written"

    @property
    def shift_ms(self) -> float:
        return self.shift_ns / 1e6

    def lag_ms_corrected(self) -> dict[str, float | None]:
        return {
            k: None if v is None else round(v + self.shift_ms, 3)
            for k, v in self.lag_ms_raw.items()
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "shift_ns": self.shift_ns,
            "shift_ms": round(self.shift_ms, 3),
            "method": self.method,
            "floor_ms": self.floor_ns / 1e6,
            "quantile": self.quantile,
            "samples": self.samples,
            "lag_ms_raw": dict(self.lag_ms_raw),
            "lag_ms_corrected": self.lag_ms_corrected(),
            "estimated": self.estimated,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> ClockModel:
        if not isinstance(data, dict):
            raise UserError(f"{where}: field 'clock': expected an object, got {data!r}")
        shift = data.get("shift_ns")
        if isinstance(shift, bool) or not isinstance(shift, int):
            raise UserError(
                f"{where}: field 'clock.shift_ns' = {shift!r}: expected an integer number of ns"
            )
        if abs(shift) > MAX_SHIFT_MS * 1e6:
            # A replay would shift every receive time by it (and a shift of years made the soak
            # loop wait on times that never come): the same bound as --clock.
            raise UserError(
                f"{where}: field 'clock.shift_ns' = {shift}: expected a shift within ±1 day "
                f"(±{MAX_SHIFT_MS * 1e6:.0f} ns); convert the feed again, or delete the sidecar's "
                "'clock' entry to have it estimated from the data on open"
            )
        lags = data.get("lag_ms_raw") or {}
        return cls(
            shift_ns=shift,
            method=str(data.get("method", "unknown")),
            floor_ns=round(_number(data, "floor_ms", FLOOR_NS / 1e6, where) * 1e6),
            quantile=_number(data, "quantile", QUANTILE, where),
            samples=int(_number(data, "samples", 0, where)),
            lag_ms_raw={str(k): v for k, v in lags.items()} if isinstance(lags, dict) else {},
            estimated=str(data.get("estimated", "when the feed was written")),
        )


def _number(data: dict[str, Any], key: str, default: float, where: str) -> float:
    """A finite number from the sidecar's clock object, or a message naming the field."""
    v = data.get(key, default)
    try:
        x = float(v) if not isinstance(v, bool) and isinstance(v, int | float) else math.nan
    except OverflowError:  # an integer of hundreds of digits
        x = math.nan
    if not math.isfinite(x) or (key == "quantile" and not 0.0 < x < 1.0):
        want = "a quantile within (0, 1)" if key == "quantile" else "a finite number"
        raise UserError(f"{where}: field 'clock.{key}' = {repr(v)[:40]}: expected {want}")
    return x


GENERATED = ClockModel(0, METHOD_GENERATED, estimated="exact: a generated feed")


def estimate(
    lags_ns: np.ndarray,
    floor_ns: int = FLOOR_NS,
    quantile: float = QUANTILE,
    estimated: str = "when the feed was written",
) -> ClockModel:
    """The clock model of per-message lags ``local_ts - exch_ts`` (ns)."""
    lags = np.asarray(lags_ns, dtype=np.int64)
    n = len(lags)
    if n == 0:
        return ClockModel(0, METHOD_NO_SAMPLES, floor_ns, quantile, 0, {}, estimated)
    qs = np.quantile(lags, [quantile, 0.5, 0.99], method="inverted_cdf")
    raw = {"p1": _ms(qs[0]), "p50": _ms(qs[1]), "p99": _ms(qs[2])}
    if np.count_nonzero(lags == 0) >= ONE_CLOCK_SHARE * n:
        return ClockModel(0, METHOD_ONE_CLOCK, floor_ns, quantile, n, raw, estimated)
    shift = max(0, floor_ns - int(qs[0]))
    return ClockModel(shift, METHOD_FLOOR, floor_ns, quantile, n, raw, estimated)


class LagSampler:
    """Collects one lag per receive timestamp of depth/trade events, chunk by chunk, in bounded
    memory (past ``MAX_SAMPLES`` it keeps every 2nd sample, then every 4th, ...)."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._kept = 0
        self._seen = 0
        self._step = 1
        self._last_local: int | None = None

    def add(self, events: np.ndarray, continues: bool = True) -> None:
        """Sample a chunk; ``continues=False`` when it does not follow the previous one."""
        kinds = events["kind"]
        market = (kinds == KIND_DEPTH) | (kinds == KIND_TRADE)
        local = np.asarray(events["local_ts"][market], dtype=np.int64)
        if not len(local):
            return
        exch = np.asarray(events["exch_ts"][market], dtype=np.int64)
        first = np.empty(len(local), dtype=bool)
        first[0] = not continues or self._last_local is None or local[0] != self._last_local
        first[1:] = local[1:] != local[:-1]
        self._last_local = int(local[-1])
        lag = (local - exch)[first]
        if self._step > 1:
            idx = self._seen + np.arange(len(lag))
            lag = lag[idx % self._step == 0]
        self._seen += int(np.count_nonzero(first))
        self._parts.append(lag)
        self._kept += len(lag)
        if self._kept >= 2 * MAX_SAMPLES:
            both = np.concatenate(self._parts)[::2]
            self._parts = [both]
            self._kept = len(both)
            self._step *= 2

    def samples(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.int64)

    def model(self, estimated: str = "when the feed was written") -> ClockModel:
        return estimate(self.samples(), estimated=estimated)


def estimate_events(events: np.ndarray, estimated: str) -> ClockModel:
    """The model of an events array, from evenly spread blocks when it is long (cheap on a
    memory map: only those pages are read)."""
    s = LagSampler()
    n = len(events)
    if n <= OPEN_BLOCKS * OPEN_BLOCK:
        s.add(events)
    else:
        for lo in np.linspace(0, n - OPEN_BLOCK, OPEN_BLOCKS).astype(np.int64):
            s.add(events[int(lo) : int(lo) + OPEN_BLOCK], continues=False)
    return s.model(estimated)


def feed_clock(meta_clock: Any, events: np.ndarray, where: str) -> ClockModel:
    """The stored model, or (old sidecar without one) the model estimated now from the data."""
    if meta_clock is not None:
        return ClockModel.from_json(meta_clock, where)
    return estimate_events(events, "on open: the sidecar has no clock model")


# -- the --clock switch -------------------------------------------------------------------------


def parse_clock_setting(value: Any) -> str:
    """``auto``, ``raw`` or a shift in milliseconds (normalised text); ValueError otherwise."""
    text = str(value).strip().lower()
    if text in (MODE_AUTO, MODE_RAW):
        return text
    try:
        ms = float(text)
    except ValueError:
        raise ValueError(
            f"expected auto, raw or a shift in milliseconds added to local_ts (e.g. 1266 or "
            f"-2.5), got {value!r}"
        ) from None
    if not math.isfinite(ms) or abs(ms) > MAX_SHIFT_MS:
        raise ValueError(f"a clock shift must be finite and within ±1 day, got {value!r}")
    return repr(ms)


def live_clock_setting(setting: str) -> str | float:
    """``--clock`` as a live feed definition's ``clock`` field (auto, raw or ms)."""
    mode = parse_clock_setting(setting)
    return mode if mode in (MODE_AUTO, MODE_RAW) else float(mode)


@dataclass(frozen=True)
class AppliedClock:
    """The shift a run applies, where it came from, and how it is recorded and shown."""

    mode: str  # auto | raw | manual
    shift_ns: int
    source: str
    model: ClockModel | None = None

    @property
    def shift_ms(self) -> float:
        return self.shift_ns / 1e6

    def record(self) -> dict[str, Any]:
        """The keys a run's feed identity carries (run.json, EDGE_REPORT.json)."""
        return {
            "clock_mode": self.mode,
            "clock_shift_ms": round(self.shift_ms, 6),
            "clock_source": self.source,
        }

    def describe(self) -> str:
        return (
            f"clock: shift {self.shift_ms:+.3f} ms added to local_ts ({self.mode}, {self.source})"
        )


def choose_clock(setting: str, model: ClockModel | None) -> AppliedClock:
    """Apply ``--clock`` to a feed's model (None: a feed without stored events, e.g. live)."""
    mode = parse_clock_setting(setting)
    if mode == MODE_RAW:
        return AppliedClock(MODE_RAW, 0, "--clock raw: receive times as recorded", model)
    if mode == MODE_AUTO:
        if model is None:
            return AppliedClock(MODE_AUTO, 0, "no clock model for this feed", None)
        if model.method == METHOD_GENERATED:
            src = "generated feed, exact clocks"
        elif model.estimated.startswith("on open"):
            src = f"estimated on open ({model.method}); the sidecar has none"
        else:
            src = f"from feed sidecar, {model.method}"
        return AppliedClock(MODE_AUTO, model.shift_ns, src, model)
    ms = float(mode)
    return AppliedClock(MODE_MANUAL, round(ms * 1e6), f"--clock {ms:g}", model)


def shift_local(events: np.ndarray, shift_ns: int) -> np.ndarray:
    """A copy of ``events`` with ``shift_ns`` added to ``local_ts`` (the input, often a
    read-only memory map, is left untouched).

    An event stamped with its receipt time only (``exch_ts == local_ts``: a spot REST snapshot
    has no exchange time, so converters copy the receipt time) moves with it: it has no
    exchange time of its own to keep, and left behind it would look ``shift_ns`` late.
    """
    out = np.array(events, copy=True)
    if shift_ns:
        receipt_only = out["exch_ts"] == out["local_ts"]
        out["local_ts"] += np.int64(shift_ns)
        out["exch_ts"][receipt_only] += np.int64(shift_ns)
    return out


def model_of(feed: Feed) -> ClockModel:
    """An opened feed's clock model (stored, or estimated now for an older sidecar)."""
    return feed_clock(feed.meta.clock, feed.events, str(sidecar_path(feed.path)))


def check_resume_clock(run_json: Path, clock: AppliedClock) -> None:
    """A resumed run continues with the clock it started with: the shift changes every event
    the engine sees, so resuming with another one would splice two different runs."""
    try:
        feed = json.loads(run_json.read_text()).get("feed") or {}
    except (OSError, ValueError, AttributeError):
        return  # the run directory's own checks report an unreadable run.json
    if "clock_mode" not in feed:
        raise UserError(
            f"{run_json}: this run was started before feeds had a clock model (its events were "
            "replayed with raw receive times) and cannot be resumed with --clock by this "
            "version; start a new run"
        )
    old_mode, old_ms = feed.get("clock_mode"), feed.get("clock_shift_ms")
    new = clock.record()
    if old_mode != new["clock_mode"] or old_ms != new["clock_shift_ms"]:
        raise UserError(
            f"{run_json}: cannot resume with a different --clock (run: {old_mode}, shift "
            f"{old_ms} ms; now: {clock.mode}, shift {new['clock_shift_ms']} ms); resume with the "
            "run's --clock or start a new run"
        )


def clock_line(feed_identity: dict[str, Any]) -> str:
    """The reports' one-line account of the clock a run replayed its feed with."""
    if "clock_mode" in feed_identity:
        ms = feed_identity.get("clock_shift_ms")
        shift = f"{ms:+.1f} ms" if isinstance(ms, int | float) else str(ms)
        return (
            f"Clock: shift {shift} added to local_ts ({feed_identity['clock_mode']}, "
            f"{feed_identity.get('clock_source', '?')})."
        )
    live = feed_identity.get("clock")
    if feed_identity.get("kind") == "binance-ws" and isinstance(live, dict):
        ms = live.get("shift_ms", 0)
        shift = f"{ms:+.1f} ms" if isinstance(ms, int | float) else str(ms)
        return (
            f"Clock: shift {shift} added to local_ts (live, {live.get('mode', '?')}: "
            f"{live.get('chosen', '?')})."
        )
    if feed_identity.get("kind") == "binance-ws":
        return "Clock: live feed, receive times as measured (no shift)."
    return "Clock: not recorded (a run from before clock models: raw receive times)."
