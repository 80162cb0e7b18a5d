"""The soak: feed → core runner → recorder → tuner → runner, as asyncio tasks on one bus.

Why lock-step: after every chunk the runner waits until the tuner has looked at it (the
emergency rule) and, at an iteration's end, until the tuner has decided the next overrides.
That costs one bus round trip per chunk (tens of thousands of events) and makes a replayed soak
deterministic: the same feed, config and seed give the same fills, decisions and totals, and a
resumed soak continues exactly where the interrupted one committed. Operator edits of the live
overrides file are the one input that arrives asynchronously; they apply at the next chunk
boundary and are logged with the simulated time at which they took effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, TextIO

import numpy as np

from mm_sim.config import Overrides, load_local_settings
from mm_sim.core.engine import Engine
from mm_sim.core.engine_params import contract_size_of
from mm_sim.logs import get_logger
from mm_sim.runtime.arms_process import (
    ArmsProcess,
    SplitArms,
    arms_kept_inline,
    can_fork,
    wanted,
)
from mm_sim.runtime.bus import Bus, ChunkDone, EventChunk, OverridesChanged, Stop
from mm_sim.runtime.checkpoint import load_checkpoint, save_checkpoint
from mm_sim.runtime.feed_lag import IterationLag
from mm_sim.runtime.model_arms import ArmSpec, ModelArms, arm_specs
from mm_sim.runtime.operator import operator_decisions, read_edit
from mm_sim.runtime.progress import Progress, announce
from mm_sim.runtime.recorder import Recorder
from mm_sim.runtime.replay import replay_chunks
from mm_sim.runtime.rolling import Rolling
from mm_sim.runtime.soak_config import SoakConfig, SoakOutcome
from mm_sim.runtime.tuner import Decision, IterationMetrics, Tuner
from mm_sim.tuning.session import TuningSession
from mm_sim.tuning.walkforward import NAME as WALK_FORWARD
from mm_sim.tuning.walkforward import WalkForwardTuner
from mm_sim.tuning.window import Window

log = get_logger("mm_sim.soak")


@dataclass(frozen=True)
class TunerDone:
    """The tuner has seen a chunk (and, at an iteration's end, decided); the runner may go on."""

    iteration: int
    decisions: tuple[Decision, ...] = ()
    overrides: Overrides | None = None  # the overrides to use from now on, when changed


@dataclass(frozen=True)
class IterationEnded:
    iteration: int
    metrics: IterationMetrics
    overrides: Overrides
    sim_ts: int
    window: Window | None = None  # the iteration's events and start state (walk-forward)


@dataclass(frozen=True)
class RollingStats:
    iteration: int
    net_bps: float
    fills: int
    overrides: Overrides
    sim_ts: int


# The signals that stop a soak gracefully (a second one aborts).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Soak:
    def __init__(self, cfg: SoakConfig, out: TextIO = sys.stdout) -> None:
        self.cfg = cfg
        self.out = out
        self.bus = Bus()
        self.engine = Engine(cfg.profile, cfg.overrides, cfg.instrument, cfg.settings.seed)
        self.control = (
            Engine(cfg.profile, cfg.overrides, cfg.instrument, cfg.settings.seed)
            if cfg.control
            else None
        )
        self.tuner: Tuner | WalkForwardTuner = self._make_tuner(None)
        self.tuning = (
            TuningSession(
                cfg.profile,
                cfg.instrument,
                cfg.settings.seed,
                keep_windows=self.walk_forward,
                shadows=cfg.settings.shadow,
                client=cfg.replay_client,
                where=cfg.replay_where,
            )
            if self.walk_forward or cfg.settings.shadow
            else None
        )
        self._tuning_extra: dict[str, Any] = {}
        self.overrides = cfg.overrides
        self._progress: Progress | None = None  # while run() shows one
        self.recorder = Recorder(
            cfg.artifacts, cfg.profile, control=cfg.control, charts=cfg.charts,
            interim_reports=cfg.interim_reports, fills_csv=cfg.fills_csv,
        )  # fmt: skip
        self.models = self._model_arms()
        self.decisions: list[Decision] = []
        self.stop_requested = asyncio.Event()
        self.stop_signal: int = signal.SIGINT
        self.start_iteration = 0
        self.rolling = Rolling(contract_size_of(cfg.instrument))
        self._lag = IterationLag(cfg.events, cfg.clock_shift_ns, cfg.lag_memo)
        self._iter_decisions: list[Decision] = []
        self._uncommitted: tuple[int, int] | None = None  # (iteration, sim_ts) not yet committed
        self._own_write: str | None = None
        self._rejected0: dict[str, int] = {}  # engines' post-only rejections counted so far

    def _model_arms(self) -> ModelArms | SplitArms:
        """The arms inline, or most of them in a forked child beside the primary
        (runtime/arms_process.py)."""
        cfg = self.cfg
        specs = arm_specs(cfg.profile, cfg.model_arms, cfg.clock_shift_ns)

        def make(part: list[ArmSpec]) -> ModelArms:
            return ModelArms(
                cfg.artifacts, part, cfg.overrides, cfg.instrument, cfg.settings.seed,
                checkpoints=cfg.checkpoints,
            )  # fmt: skip

        if not specs:
            return make(specs)
        # (debug where there was no choice: a sweep cell, in a worker's thread, would say so
        # for every cell)
        say = log.debug
        if cfg.source is not None:
            fork, why = False, "a live feed (its events exist in this process only)"
        elif not can_fork():
            fork, why = False, "no fork here (another thread in this process, or the platform)"
        else:
            fork, why = wanted(load_local_settings().model_arms_process)
            say = log.info
        if not fork:
            say("model arms run in the soak's process", arms=len(specs), why=why)
            return make(specs)
        k = arms_kept_inline(len(specs))
        child = ArmsProcess(lambda: make(specs[k:]), self._replay)
        log.info(
            "model arms run in a child process", arms=len(specs) - k, inline=k, pid=child.pid,
            why=why,
        )  # fmt: skip
        return SplitArms(make(specs[:k]), child)

    def _replay(self, start_iteration: int) -> AsyncIterator[EventChunk]:
        """The replayed feed's chunks from an iteration on (boundaries: the feed's alone)."""
        return replay_chunks(
            self.cfg.events,
            self.cfg.plan,
            self.cfg.chunk_events,
            start_iteration,
            chunk_ns=self.cfg.chunk_ns,
            clock_shift_ns=self.cfg.clock_shift_ns,
        )

    @property
    def walk_forward(self) -> bool:
        return self.cfg.tune and self.cfg.settings.tuner == WALK_FORWARD

    def _make_tuner(self, state: dict[str, Any] | None) -> Tuner | WalkForwardTuner:
        """The tuner ``--tuner`` names, fresh or from a checkpoint's state."""
        freeze = self.cfg.freeze_after_convergence
        if self.walk_forward:
            bars = self.cfg.profile.gates.error_bars
            if state is None:
                return WalkForwardTuner(bars, freeze)
            return WalkForwardTuner.from_state(state, bars, freeze)
        if state is None:
            return Tuner(freeze_after_convergence=freeze)
        return Tuner.from_state(state, freeze=freeze)

    # -- set-up --------------------------------------------------------------------------------
    def _prepare(self) -> None:
        cfg = self.cfg
        run_info = {
            "settings": cfg.settings.model_dump(),
            "initial_overrides": cfg.overrides.as_dict(),
            "feed": cfg.feed_identity,
            "instrument": {
                "symbol": cfg.instrument.symbol,
                "venue": cfg.instrument.venue,
                "tick_size": cfg.instrument.tick_size,
                "lot_size": cfg.instrument.lot_size,
                # An inverse instrument also records its contract size (reports read it).
                **(
                    {"inverse": True, "contract_size": cfg.instrument.contract_size}
                    if cfg.instrument.inverse
                    else {}
                ),
            },
            "seed": cfg.settings.seed,
            "tune": cfg.tune,
            "control": cfg.control,
            "freeze_after_convergence": cfg.freeze_after_convergence,
            "shadow": cfg.settings.shadow,
            "iterations": [
                {"index": p.index, "start_ns": p.start_ns, "end_ns": p.end_ns}
                for p in cfg.plan.iterations
            ],
        }
        committed = self.recorder.open(run_info, resume=cfg.resume)
        self.models.open(run_info, cfg.resume, committed)
        if cfg.announce is not None:
            cfg.announce()
        if committed is not None:
            ck = load_checkpoint(self.recorder.checkpoint_dir, committed)
            self.engine.load_state(ck.engine)
            if self.control is not None and ck.control is not None:
                self.control.load_state(ck.control)
            self.tuner = self._make_tuner(ck.tuner)
            self.overrides = Overrides.model_validate(ck.overrides)
            self.engine.set_overrides(self.overrides)
            self.models.set_overrides(self.overrides)
            self._rejections()  # count from the checkpoint on
            self.decisions = [Decision(**d) for d in ck.decisions]
            self.start_iteration = committed + 1
            print(
                f"resuming after iteration {committed} ({committed + 1}/{len(cfg.plan.iterations)} "
                f"done; checkpoint in {self.recorder.checkpoint_dir})",
                file=self.out,
            )
        self._write_overrides()

    def _write_overrides(self) -> None:
        self._own_write = self.recorder.write_overrides(self.overrides)

    # -- tasks ---------------------------------------------------------------------------------
    async def _feed_task(self) -> None:
        chunks = (
            self.cfg.source(self.start_iteration)
            if self.cfg.source is not None
            else replay_chunks(
                self.cfg.events,
                self.cfg.plan,
                self.cfg.chunk_events,
                self.start_iteration,
                self.cfg.settings.speed,
                chunk_ns=self.cfg.chunk_ns,
                clock_shift_ns=self.cfg.clock_shift_ns,
                stop=self.stop_requested,
            )
        )
        async for chunk in chunks:
            if self.stop_requested.is_set():
                break
            await self.bus.publish(chunk)
        await self.bus.publish(Stop("end of feed"))

    async def _runner_task(self, progress: Progress) -> bool:
        """Drive the core chunk by chunk; return True when interrupted."""
        self._progress = progress
        inbox = self.bus.subscribe(EventChunk, Stop)
        changes = self.bus.subscribe(OverridesChanged)
        current_it = self.start_iteration
        while True:
            msg = await inbox.get()
            if isinstance(msg, Stop):
                if self.stop_requested.is_set() and self._uncommitted is not None:
                    it, ts = self._uncommitted
                    await self._end_iteration(it, ts, partial=True)
                    progress.iteration_done(it, self.recorder.last_report)
                return self.stop_requested.is_set()
            chunk: EventChunk = msg
            self._apply_changes(changes, chunk)
            current_it = chunk.iteration
            t0 = time.perf_counter()
            # The venue may need an event of the next chunk first (two clocks, core/timeline.py):
            # the engine holds the last reorder window back until the iteration ends.
            flush = chunk.end_of_iteration or chunk.end_of_feed
            if self.tuning is not None:
                self.tuning.feed(
                    chunk.iteration,
                    chunk.events,
                    flush,
                    self.engine,
                    self._span(chunk.iteration),
                    self.recorder.tuned,
                    self.overrides,
                )
            # First, so that arms in a child process run this chunk while the primary does.
            self.models.run(chunk.events, flush, chunk.iteration)
            res = self.engine.run(chunk.events, flush=flush)
            marks = res.marks
            if chunk.end_of_iteration:
                marks = np.concatenate([marks, self.engine.mark_now()])
            self._lag.add(chunk)
            sim_ts = int(chunk.events["exch_ts"][-1]) if len(chunk.events) else 0
            done = ChunkDone(
                chunk.iteration,
                "tuned",
                res.fills,
                res.actions,
                res.blocks,
                marks,
                sim_ts,
                len(chunk.events),
                chunk.end_of_iteration,
                chunk.end_of_feed,
            )
            self.recorder.add_chunk(done)
            self.rolling.add(marks, res.fills)
            if self.control is not None:
                cres = self.control.run(chunk.events, flush=flush)
                cmarks = cres.marks
                if chunk.end_of_iteration:
                    cmarks = np.concatenate([cmarks, self.control.mark_now()])
                self.recorder.add_chunk(
                    ChunkDone(
                        chunk.iteration,
                        "control",
                        cres.fills,
                        cres.actions,
                        cres.blocks,
                        cmarks,
                        sim_ts,
                        len(chunk.events),
                        chunk.end_of_iteration,
                        chunk.end_of_feed,
                    )
                )
            progress.chunk(
                chunk.iteration,
                sim_ts,
                len(chunk.events),
                time.perf_counter() - t0,
                self.rolling.net_bps()[0],
            )
            interrupted = self.stop_requested.is_set()
            # The feed ended before this iteration's end: it is shorter, and says so.
            cut_by_feed = chunk.end_of_iteration and self._feed_cut(chunk.iteration)
            self._uncommitted = (chunk.iteration, sim_ts)
            if chunk.end_of_iteration or interrupted:
                await self._end_iteration(
                    chunk.iteration, sim_ts, partial=not chunk.end_of_iteration or cut_by_feed
                )
                progress.iteration_done(chunk.iteration, self.recorder.last_report)
                if interrupted:
                    return True
            else:
                net, nfills = self.rolling.net_bps()
                await self.bus.publish(
                    RollingStats(current_it, net, nfills, self.overrides, sim_ts)
                )
                td = await self._done_q.get()
                self._iter_decisions.extend(td.decisions)
            await asyncio.sleep(0)

    def _span(self, iteration: int) -> tuple[int, int]:
        plans = [p for p in self.cfg.plan.iterations if p.index == iteration]
        return (plans[0].start_ns, plans[0].end_ns) if plans else (0, 0)

    def _feed_cut(self, iteration: int) -> bool:
        plans = [p for p in self.cfg.plan.iterations if p.index == iteration]
        return bool(plans) and plans[0].partial and self.cfg.source is None

    def _apply_changes(self, changes: asyncio.Queue[OverridesChanged], chunk: EventChunk) -> None:
        while not changes.empty():
            msg = changes.get_nowait()
            if msg.overrides == self.overrides:
                continue
            sim_ts = int(chunk.events["exch_ts"][0]) if len(chunk.events) else 0
            if msg.source == "operator":  # the tuner's own changes arrive as decisions already
                self._iter_decisions.extend(
                    operator_decisions(
                        chunk.iteration, self.overrides, msg.overrides, msg.reason, sim_ts
                    )
                )
            self.overrides = msg.overrides
            self.engine.set_overrides(msg.overrides)
            self.models.set_overrides(msg.overrides)
            log.info(
                "overrides applied",
                source=msg.source,
                reason=msg.reason,
                iteration=chunk.iteration,
                sim_ts_ns=sim_ts,
                overrides=msg.overrides.as_dict(),
            )
            self._write_overrides()

    async def _end_iteration(self, iteration: int, sim_ts: int, partial: bool) -> None:
        if partial:
            # A cut-short iteration still closes on a mark so its PnL is complete.
            self.recorder.add_marks("tuned", self.engine.mark_now())
            if self.control is not None:
                self.recorder.add_marks("control", self.control.mark_now())
        ws_lag_p95 = self._lag.p95()
        metrics = self.recorder.iteration_metrics(iteration, ws_lag_p95, self._rejections())
        overrides_in_force = self.overrides
        # The model arms commit first: the primary's reports, rebuilt on its commit, read them.
        self.models.end_iteration(iteration, overrides_in_force, ws_lag_p95, partial)
        window = None
        self._tuning_extra = {}
        if self.tuning is not None:
            if partial:
                self.tuning.drop_window()
            else:
                window = self.tuning.end(ws_lag_p95)
                if self.tuning.shadows is not None:
                    self._tuning_extra["shadows"] = self.tuning.shadow_rows()
        if self.cfg.tune and not partial:
            await self.bus.publish(
                IterationEnded(iteration, metrics, self.overrides, sim_ts, window)
            )
            td = await self._done_q.get()
            announce(self._progress, self.out, td.decisions, "autotune")
            self._iter_decisions.extend(td.decisions)
            if td.overrides is not None and td.overrides != self.overrides:
                self.overrides = td.overrides
                self.engine.set_overrides(self.overrides)
                self.models.set_overrides(self.overrides)
        decisions = self._iter_decisions
        self._iter_decisions = []
        self._uncommitted = None
        self.decisions.extend(decisions)
        self.rolling.reset()
        if not partial and self.cfg.checkpoints:
            # A partial iteration is re-run in full on resume, so it gets no checkpoint.
            save_checkpoint(
                self.recorder.checkpoint_dir,
                iteration,
                engine=self.engine.state_arrays(),
                control=self.control.state_arrays() if self.control is not None else None,
                tuner=self.tuner.state_dict(),
                overrides=self.overrides.as_dict(),
                decisions=[d.to_json() for d in self.decisions],
            )
        self.recorder.commit_iteration(
            iteration,
            overrides_in_force=overrides_in_force,
            overrides_next=self.overrides,
            decisions=decisions,
            initial_overrides=self.cfg.overrides,
            partial=partial,
            extra=self._tuning_extra,
        )
        self._own_write = self.recorder.tuned.last_overrides_text

    def _rejections(self) -> dict[str, int]:
        """Post-only rejections per arm since the last call (the engines count them)."""
        out = {}
        for arm, eng in (("tuned", self.engine), ("control", self.control)):
            if eng is not None:
                now = int(eng.counters()["other"]["post_only_rejected"])
                out[arm] = now - self._rejected0.get(arm, 0)
                self._rejected0[arm] = now
        return out

    async def _tuner_task(self) -> None:
        """Applies the seed's scenarios after each iteration and the emergency rule per chunk."""
        inbox = self.bus.subscribe(IterationEnded, RollingStats)
        while True:
            msg = await inbox.get()
            if isinstance(msg, IterationEnded):
                if isinstance(self.tuner, WalkForwardTuner):
                    new, decisions = self._walk_forward(msg)
                else:
                    new, decisions = self.tuner.after_iteration(msg.metrics, msg.overrides)
                await self.bus.publish(TunerDone(msg.iteration, tuple(decisions), new))
                continue
            r: RollingStats = msg
            decisions = []
            if self.cfg.tune and r.net_bps == r.net_bps:
                new, decisions = self.tuner.emergency(
                    r.iteration, r.net_bps, r.fills, r.overrides, r.sim_ts
                )
                if decisions:
                    announce(self._progress, self.out, decisions, "autotune emergency")
                    await self.bus.publish(OverridesChanged(new, "emergency", decisions[0].reason))
            await self.bus.publish(TunerDone(r.iteration, tuple(decisions)))

    def _walk_forward(self, msg: IterationEnded) -> tuple[Overrides, list[Decision]]:
        """Replay the iteration under the candidates and decide; the record joins the line."""
        assert isinstance(self.tuner, WalkForwardTuner)
        assert self.tuning is not None and msg.window is not None
        run = self.tuning.evaluator(msg.window)
        new, decisions, record = self.tuner.after_window(msg.metrics, msg.overrides, run)
        cost = self.tuning.cost
        for row, src in zip(record["candidates"], cost.pop("sources", []), strict=False):
            row["source"] = src
            if row["id"] == record["winner"] and src.startswith("shadow"):
                # a shadow arm ran these overrides live all iteration: they are promoted
                record["promoted"] = src
                decisions = [replace(d, reason=f"{d.reason}; promoted {src}") for d in decisions]
        self._tuning_extra["tuning"] = {**record, "cost": cost}
        return new, decisions

    async def _operator_task(self) -> None:
        """Hot-swap operator edits of the live overrides file; reject invalid ones, keep old."""
        path = self.recorder.overrides_path
        seen: bytes | None = None
        while True:
            await asyncio.sleep(0.5)
            own = self._own_write.encode() if self._own_write is not None else None
            edit = read_edit(path, self.overrides, own)
            if edit is None or edit.text == seen:
                continue
            seen = edit.text
            if edit.overrides is None:
                log.error(
                    "operator overrides rejected; keeping the old values",
                    path=str(path),
                    error=edit.error,
                )
                continue
            log.info(
                "operator overrides merged",
                path=str(path),
                changed=list(edit.changed),
                kept_from_current=list(edit.kept),
            )
            await self.bus.publish(OverridesChanged(edit.overrides, "operator", f"edited {path}"))

    # -- entry -----------------------------------------------------------------------------------
    async def run(self) -> SoakOutcome:
        self._prepare()
        self._done_q = self.bus.subscribe(TunerDone)
        loop = asyncio.get_running_loop()
        # SIGTERM (kill, a service manager, docker stop, timeout) stops the run as Ctrl-C does:
        # the chunk finished, the iteration committed as partial, the reports written.
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
        total = len(self.cfg.plan.iterations)
        with Progress(total, self.start_iteration, self.cfg.plan, self.out) as progress:
            if self.walk_forward and self.cfg.replay_client is not None:
                print(f"walk-forward replays on the {self.cfg.replay_where}", file=self.out)
            feed = asyncio.create_task(self._feed_task())
            tuner = asyncio.create_task(self._tuner_task())
            operator = asyncio.create_task(self._operator_task())
            try:
                interrupted = await self._runner_task(progress)
            finally:
                for t in (feed, tuner, operator):
                    t.cancel()
                await asyncio.gather(feed, tuner, operator, return_exceptions=True)
                for sig in STOP_SIGNALS:
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(sig)
        self.models.close()
        if interrupted and self.recorder.iterations_done == 0:
            # Stopped before its first chunk ran (a paced replay's first wait): there is nothing
            # to report on, and a verdict on no fills would be a verdict on nothing.
            self.recorder.close()
            return SoakOutcome({}, True, 0, self.decisions, self.stop_signal)
        final = self.recorder.finish(note=self.cfg.plan.note, interrupted=interrupted)
        return SoakOutcome(
            final, interrupted, self.recorder.iterations_done, self.decisions, self.stop_signal
        )

    def _on_stop_signal(self, sig: int) -> None:
        if self.stop_requested.is_set():
            raise KeyboardInterrupt
        self.stop_signal = sig
        what = "interrupt" if sig == signal.SIGINT else f"{signal.Signals(sig).name} received"
        print(
            f"\n{what}: finishing the current chunk and writing partial reports "
            "(Ctrl-C or the signal again aborts)",
            file=sys.stderr,
        )
        self.stop_requested.set()
