"""The sweep's feeds: ``NAME[@SEED]`` tokens resolved once, on the driver, into small specs.

Why a seed per feed: a synthetic market is one definition and many days — ``synthetic@1`` and
``synthetic@2`` are two independent days of the same market — and training and testing on
different days is what makes out-of-sample figures mean something. For a stored (file) feed the
seed only drives the core's own randomness (probabilistic queue position), exactly as
``soak --seed`` does. A bare name uses the sweep's ``--seed``.

A feed's label in the results is the token as given with its seed (``NAME@SEED``), never a name
read from inside a definition: two definition files that call themselves the same would
otherwise share one label, and their rows one key. A stored feed shorter than the run is
replayed to its end, as ``soak`` does (docs/WHAT_HAPPENS_WHEN.md, "A feed shorter than the
run"): every cell on it is cut at the same place, so cells stay comparable, and every row and the
report say so (``partial``, ``feed_note``).

A task carries the resolved definition (a few hundred bytes of JSON), never events: the worker
generates a synthetic day or memory-maps a file by path, so a real cluster needs the file feeds
(and the output directory) on a filesystem every worker sees at the same path.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.errors import UserError
from mm_sim.events import Instrument, open_feed
from mm_sim.feeds.spec import (
    BinanceLiveFeedSpec,
    FileFeedSpec,
    SyntheticFeedSpec,
    check_synthetic_duration,
    replay_clock,
    resolve_feed,
)
from mm_sim.runtime.replay import plan_iterations, replay_seconds

# Three synthetic days to choose the cell on, two more to test it on.
DEFAULT_TRAIN = ("synthetic@1", "synthetic@2", "synthetic@3")
DEFAULT_TEST = ("synthetic@4", "synthetic@5")

_SEED = re.compile(r"^(?P<name>.+)@(?P<seed>\d+)$")


@dataclass(frozen=True)
class FeedCase:
    """One feed of the sweep: its label in the results, and what a worker needs to replay it."""

    label: str  # ``NAME@SEED``: the feed's identity in sweep_results.csv
    seed: int
    spec: dict[str, Any]  # a synthetic or file feed definition (JSON-able; no events)
    # The clock shift every run on this feed applies (``--clock``, decided once on the driver)
    # and how run.json records it (mm_sim.feeds.clock).
    clock_shift_ns: int = 0
    clock: dict[str, Any] = field(default_factory=dict)
    # Set when a stored feed ends before the run: every run on it is cut there (partial).
    cut_note: str | None = None
    # A stored feed's data digest (its sidecar's, checked against the file on open): a copy
    # of a feed under another name replays the same events.
    content: str = ""
    # The feed's own instrument, known without replaying it (the sidecar's, or the synthetic
    # market's parameters'): the profile's tick is checked against it before any cell runs.
    instrument: Instrument | None = None

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])

    @property
    def data_key(self) -> str:
        """Equal for two tokens that replay the same events (e.g. two names of one market).

        The seed picks a day of a synthetic market; a stored feed replays the same recorded
        events whatever its @SEED, so its seed is not part of what it replays.
        """
        if self.content:
            return json.dumps([{"kind": self.kind, "content": self.content}, None])
        body = {k: v for k, v in self.spec.items() if k not in ("name", "description")}
        seed = self.seed if self.kind == "synthetic" else None
        return json.dumps([body, seed], sort_keys=True)

    @property
    def slug(self) -> str:
        """A directory name for this feed's runs (labels may be paths)."""
        safe = re.sub(r"[^A-Za-z0-9._@-]+", "_", self.label.rsplit("/", 1)[-1])[:60]
        if safe == self.label:
            return safe
        return f"{safe}-{hashlib.sha256(self.label.encode()).hexdigest()[:8]}"


def parse_token(token: str, default_seed: int) -> tuple[str, int]:
    """``NAME@SEED`` → (NAME, SEED); a bare ``NAME`` takes ``default_seed``."""
    m = _SEED.match(token)
    if m:
        seed = int(m.group("seed"))
        if seed >= 2**64:  # the --seed bound (RunSettings.seed); a worker's pydantic said so late
            raise UserError(f"feed {token!r}: SEED must be below 2**64, got {seed}")
        return m.group("name"), seed
    if "@" in token.rsplit("/", 1)[-1]:
        raise UserError(f"feed {token!r}: expected NAME or NAME@SEED with SEED a whole number")
    return token, default_seed


def _length_note(events: np.ndarray, iterations: int, iteration_minutes: float) -> str | None:
    """What the run will not get from a stored feed that ends before it does (None: nothing)."""
    return plan_iterations(events, iterations, int(iteration_minutes * 60e9)).note


def resolve_case(
    token: str,
    default_seed: int,
    iterations: int,
    iteration_minutes: float,
    clock: str = "auto",
) -> FeedCase:
    """Resolve and check one token now, so a typo stops the sweep before any cluster starts.

    A synthetic day is generated exactly as long as a run replays (as the soak does); a file
    feed is used as recorded, to its end when it is shorter than the run (``cut_note``).
    ``clock`` is the soak's ``--clock``: the shift is decided here, from the feed's clock
    model, as the soak does.
    """
    name, seed = parse_token(token, default_seed)
    spec = resolve_feed(name)
    if isinstance(spec, BinanceLiveFeedSpec):
        raise UserError(
            f"feed {token!r} is live; a sweep replays stored feeds (record it first with "
            "`mm_sim record`, then sweep the recording)"
        )
    if isinstance(spec, SyntheticFeedSpec):
        spec = spec.model_copy(update={"duration_s": replay_seconds(iterations, iteration_minutes)})
        check_synthetic_duration(spec, repr(token))  # here, before any worker tries
        # Validate the synthetic parameters now rather than in every worker.
        from mm_sim.feeds.synthetic import SyntheticParams, instrument_for

        try:
            instrument = instrument_for(SyntheticParams(**spec.params))
        except ValueError as exc:
            raise UserError(f"feed {token!r}: invalid synthetic parameters: {exc}") from None
    cut_note = None
    content = ""
    if not isinstance(spec, SyntheticFeedSpec):
        assert isinstance(spec, FileFeedSpec)
        feed = open_feed(Path(spec.path).resolve(), check=True)  # the content checked too
        path = feed.path.resolve()
        content = json.dumps(feed.meta.data, sort_keys=True)
        instrument = feed.instrument
        # The feed as opened (a memory map: only the pages searched are read); opening it
        # again hashed the whole file a second time.
        cut_note = _length_note(feed.events, iterations, iteration_minutes)
        spec = spec.model_copy(update={"path": str(path)})
    applied = replay_clock(spec, clock)
    return FeedCase(
        label=f"{name}@{seed}",
        seed=seed,
        spec=spec.model_dump(mode="json"),
        clock_shift_ns=applied.shift_ns,
        clock=applied.record(),
        cut_note=cut_note,
        content=content,
        instrument=instrument,
    )


def resolve_cases(
    tokens: list[str],
    default_seed: int,
    iterations: int,
    iteration_minutes: float,
    clock: str = "auto",
) -> list[FeedCase]:
    """Resolve every token; two tokens naming the same events are refused (train/test leak).

    Labels are then unique too: an equal label is the same feed with the same seed.
    """
    cases = [resolve_case(t, default_seed, iterations, iteration_minutes, clock) for t in tokens]
    seen: dict[str, str] = {}
    for tok, c in zip(tokens, cases, strict=True):
        if c.data_key in seen:
            raise UserError(
                f"feed {tok!r} replays the same events as {seen[c.data_key]!r} "
                "(a synthetic market with the same seed, or the same stored feed, under any "
                "name or copy, whose @SEED does not change its events): give each data set "
                "once; only a synthetic feed gets another day from another @SEED"
            )
        seen[c.data_key] = tok
    return cases


def spec_model(case: FeedCase) -> SyntheticFeedSpec | FileFeedSpec:
    if case.kind == "synthetic":
        return SyntheticFeedSpec.model_validate(case.spec)
    return FileFeedSpec.model_validate(case.spec)
