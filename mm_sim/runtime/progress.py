"""Progress of a soak: a rich live display on a terminal, plain lines otherwise.

Plain lines go to the same stream as the results so a log of a non-interactive run reads as a
story: one line per finished iteration with its figures. Iterations are numbered as
metrics.jsonl and the reports number them (from 0); how many are done is a count beside it.
Other lines printed during the run (the tuner's markers) go through ``say``, which prints
them above the bar instead of over it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeElapsedColumn

from mm_sim.progress import TerminalProgress
from mm_sim.runtime.replay import ReplayPlan


def _fmt_sim(ns: int) -> str:
    s = max(ns, 0) // 1_000_000_000
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress(TerminalProgress):
    def __init__(self, total: int, start: int, plan: ReplayPlan, out: TextIO) -> None:
        super().__init__(out)
        self.total = total
        self.plan = plan
        self.events = 0
        self.busy_s = 0.0
        self.wall0 = time.perf_counter()
        self.t0_ns = plan.iterations[0].start_ns if plan.iterations else 0
        self.live_net = float("nan")
        self.verdict = "-"
        self._start = start

    def _columns(self) -> tuple[ProgressColumn, ...]:
        return (
            TextColumn("[bold]iteration {task.fields[it]}"),
            TextColumn("({task.completed}/{task.total} done)"),
            BarColumn(),
            TextColumn("sim {task.fields[sim]}"),
            TextColumn("{task.fields[rate]} ev/s"),
            TextColumn("net {task.fields[net]} bps"),
            TextColumn("verdict {task.fields[verdict]}"),
            TimeElapsedColumn(),
        )

    def _task(self) -> dict[str, Any]:
        return {
            "description": "soak",
            "total": self.total,
            "completed": self._start,
            "it": self._start,
            "sim": starting_note(),
            "rate": "-",
            "net": "-",
            "verdict": "-",
        }

    def __enter__(self) -> Progress:
        super().__enter__()
        if self.live is None and kernels_cached() is False:
            print(f"{COLD_COMPILE_NOTE} ...", file=self.out, flush=True)
        return self

    def chunk(self, iteration: int, sim_ts: int, n_events: int, seconds: float, net: float) -> None:
        self.events += n_events
        self.busy_s += seconds
        self.live_net = net
        if self.live is not None:
            rate = self.events / max(time.perf_counter() - self.wall0, 1e-9)
            self.update(
                it=iteration,
                sim=_fmt_sim(sim_ts - self.t0_ns),
                rate=f"{rate:,.0f}",
                net=f"{net:+.2f}" if net == net else "-",
            )

    def iteration_done(self, iteration: int, report: dict[str, Any]) -> None:
        self.verdict = str(report.get("verdict_so_far", "-"))
        net = report.get("net_bps", float("nan"))
        if self.live is not None:
            self.update(
                completed=iteration + 1,
                verdict=self.verdict,
                net=f"{net:+.2f}" if net == net else "-",
            )
            return
        wall = time.perf_counter() - self.wall0
        net_s = f"{net:+.3f}" if net == net else "n/a (no fill)"  # no notional to divide by
        print(
            f"iteration {iteration} ({iteration + 1}/{self.total} done): this iteration "
            f"net_bps {net_s}  fills {report.get('fills', 0)}  "
            f"pnl {report.get('pnl', float('nan')):+.2f}; so far: verdict {self.verdict}, "
            f"{self.events:,} events, {wall:.1f} s wall, "
            f"{self.events / max(wall, 1e-9):,.0f} ev/s",
            file=self.out,
            flush=True,
        )

    def say(self, line: str) -> None:
        """Print a line of the run's story: above the bar on a terminal (a plain print would
        land on the bar's own line and be redrawn over), as is otherwise."""
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=self.out, flush=True)


def announce(progress: Progress | None, out: TextIO, decisions: Sequence[Any], event: str) -> None:
    """Show tuner decisions once each: the greppable marker on stdout, and the structured log
    line on stderr, except when both are the same terminal (the reader would see every
    decision twice); the log line is then kept at debug level."""
    from mm_sim.logs import get_logger

    log = get_logger("mm_sim.soak")
    both_on_terminal = progress is not None and progress.live is not None and sys.stderr.isatty()
    for d in decisions:
        if progress is not None:
            progress.say(d.marker())
        else:
            print(d.marker(), file=out, flush=True)
        if both_on_terminal:
            log.debug(event, **d.to_json())
        elif "emergency" in event:
            log.warning(event, **d.to_json())
        else:
            log.info(event, **d.to_json())


# Measured: a cold numba cache costs the first soak about this long before its first event
# (~20 s on a quiet 2-core machine, up to a minute beside other work).
COLD_COMPILE_NOTE = "compiling kernels (first run only, 20-60 s)"


def kernels_cached() -> bool | None:
    """Whether the replay kernel has a compiled copy in numba's cache for its current source
    (``None``: cannot tell). Only a bar's first words depend on it."""
    try:
        from mm_sim.core.driver import run_chunk

        return bool(run_chunk._cache._cache_file._load_index())
    except Exception:  # numba internals: any change there only loses the hint
        return None


def starting_note() -> str:
    """What the bar says before the first chunk has run."""
    return COLD_COMPILE_NOTE if kernels_cached() is False else "starting"
