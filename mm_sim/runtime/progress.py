"""Progress of a soak: a rich live display on a terminal, plain lines otherwise.

Plain lines go to the same stream as the results so a log of a non-interactive run reads as a
story: one line per finished iteration with its figures.
"""

from __future__ import annotations

import time
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
            TextColumn("[bold]iteration {task.fields[it]}/{task.total}"),
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
            "it": self._start + 1,
            "sim": "0:00:00",
            "rate": "-",
            "net": "-",
            "verdict": "-",
        }

    def chunk(self, iteration: int, sim_ts: int, n_events: int, seconds: float, net: float) -> None:
        self.events += n_events
        self.busy_s += seconds
        self.live_net = net
        if self.live is not None:
            rate = self.events / max(time.perf_counter() - self.wall0, 1e-9)
            self.update(
                it=iteration + 1,
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
        print(
            f"iteration {iteration + 1}/{self.total}: net_bps {net:+.3f}  "
            f"fills {report.get('fills', 0)}  pnl {report.get('pnl', float('nan')):+.2f}  "
            f"verdict so far {self.verdict}  ({self.events:,} events, {wall:.1f} s wall, "
            f"{self.events / max(wall, 1e-9):,.0f} ev/s)",
            file=self.out,
            flush=True,
        )
