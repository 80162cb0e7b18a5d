"""Recorder: the soak's side of the run directory, for the tuned arm and the control arm.

The run directory (``mm_sim.report.rundir``) owns durability and the commit protocol; this
class only routes chunks to the right arm, evaluates an iteration for the tuner, commits it,
and rebuilds the reports. The control arm (``--control``) lives in ``ROOT/control`` with the
same layout, so ``mm_sim report ROOT/control`` works on it too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.config import Overrides, Profile
from mm_sim.report.control import write_comparison
from mm_sim.report.edge import tuner_inputs
from mm_sim.report.render import build_reports, evaluate_pending
from mm_sim.report.runconfig import make_run_config
from mm_sim.report.rundir import PendingIteration, RunDir
from mm_sim.report.schema import EdgeSection, IterationLine
from mm_sim.runtime.bus import ChunkDone
from mm_sim.runtime.checkpoint import load_checkpoint
from mm_sim.runtime.tuner import Decision, IterationMetrics


class Recorder:
    def __init__(
        self,
        root: Path,
        profile: Profile,
        control: bool = False,
        charts: bool = True,
        interim_reports: bool = True,
        fills_csv: bool = True,
    ) -> None:
        self.root = Path(root)
        self.charts = charts
        self.interim_reports = interim_reports  # SoakConfig.interim_reports
        self.fills_csv = fills_csv  # SoakConfig.fills_csv
        self.profile = profile
        self.tuned = RunDir(self.root)
        self.control = RunDir(self.root / "control") if control else None
        self.checkpoint_dir = self.root / "soak" / "checkpoints"
        self.overrides_path = self.tuned.overrides_json
        self.last_report: dict[str, Any] = {}
        self.iterations_done = 0
        self._pending: dict[str, PendingIteration] = {}
        self._events: dict[int, int] = {}  # feed events per iteration (an outage has none)

    def open(self, run_info: dict[str, Any], resume: bool) -> int | None:
        """Start or resume; returns the last committed iteration to resume after, if any."""
        info = dict(run_info)
        cfg = make_run_config(
            settings=info.pop("settings"),
            profile=self.profile,
            overrides=info.pop("initial_overrides"),
            feed=info.pop("feed"),
            seed=info.pop("seed"),
            **info,
        )
        if resume and self.tuned.run_json.exists():
            # A damaged checkpoint stops the resume before recovery trims anything.
            done = self.tuned.committed_lines()
            if done and done[-1].partial:
                done.pop()
            if done:
                load_checkpoint(self.checkpoint_dir, done[-1].iteration)
        lines = self.tuned.begin(cfg, resume=resume, drop_partial=True)
        if self.control is not None:
            self.control.begin(
                cfg, resume=resume and self.control.run_json.exists(), drop_partial=True
            )
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.iterations_done = len(lines)
        if not lines:
            return None
        self._restore_summary_lines(lines)
        return lines[-1].iteration

    def _restore_summary_lines(self, lines: list[IterationLine]) -> None:
        """summary.txt is a human log outside the commit protocol: a kill between an
        iteration's commit and its line there loses the line. On resume, each committed
        iteration the log has no line for gets one, rebuilt from its committed record."""
        path = self.tuned.summary_txt
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        have = {int(m.group(1)) for m in _LINE.finditer(text)}
        for ln in lines:
            if ln.iteration not in have:
                decisions = [Decision(**d.model_dump()) for d in ln.decisions]
                line = _summary_line(ln.iteration, ln.edge, ln.gate.verdict, decisions, ln.partial)
                self.tuned.append_summary(f"{line} (restored from the record on resume)")

    def add_chunk(self, done: ChunkDone) -> None:
        if done.arm == "tuned":
            self._events[done.iteration] = self._events.get(done.iteration, 0) + done.n_events
        fills = done.fills
        if len(fills):
            fills = fills.copy()
            fills["iteration"] = done.iteration
        rd = self.tuned if done.arm == "tuned" else self.control
        assert rd is not None
        rd.append(fills=fills, actions=done.actions, blocks=done.blocks, marks=done.marks)

    def add_marks(self, arm: str, marks: np.ndarray) -> None:
        rd = self.tuned if arm == "tuned" else self.control
        assert rd is not None
        rd.append(marks=marks)

    def iteration_metrics(
        self, iteration: int, ws_lag_p95_ms: float, rejected: dict[str, int] | None = None
    ) -> IterationMetrics:
        """Evaluate the iteration in progress (nothing written) and return the tuner's view.

        ``rejected``: per arm, the venue's post-only rejections during the iteration (the
        engine counts them; the action records do not carry them).
        """
        rej = rejected or {}
        self._pending["tuned"] = evaluate_pending(
            self.tuned, self.profile, iteration, ws_lag_p95_ms, rej.get("tuned")
        )
        if self.control is not None:
            self._pending["control"] = evaluate_pending(
                self.control, self.profile, iteration, ws_lag_p95_ms, rej.get("control")
            )
        return IterationMetrics(**tuner_inputs(self._pending["tuned"].edge))  # type: ignore[arg-type]

    def commit_iteration(
        self,
        iteration: int,
        *,
        overrides_in_force: Overrides,
        overrides_next: Overrides,
        decisions: list[Decision],
        initial_overrides: Overrides,
        partial: bool,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """``extra``: more of the iteration's record for its line (the walk-forward search)."""
        pending = self._pending.pop("tuned")
        n_events = self._events.pop(iteration, 0)
        # No event in a whole iteration: the feed was down (a live outage) or the data has a
        # hole; its figures describe a market nobody saw, so the record says so.
        outage = n_events == 0
        self.tuned.commit_iteration(
            pending,
            overrides=overrides_in_force,
            decisions=decisions,
            overrides_next=overrides_next,
            partial=partial,
            extra={"events": n_events, "outage": outage, **(extra or {})},
        )
        if outage:
            self.tuned.append_summary(
                f"iteration {iteration}: feed outage: no events in the whole iteration"
            )
        if self.control is not None:
            self.control.commit_iteration(
                self._pending.pop("control"), overrides=initial_overrides, partial=partial
            )
        edge = pending.edge
        self.iterations_done += 1
        self.last_report = {
            "net_bps": edge.net_bps if edge.net_bps is not None else float("nan"),
            "fills": edge.fills,
            "pnl": edge.pnl if edge.pnl is not None else float("nan"),
            "verdict": pending.gate.verdict,
        }
        self.tuned.append_summary(
            _summary_line(iteration, pending.edge, pending.gate.verdict, decisions, partial)
        )
        # Reports are refreshed after every iteration, so a killed soak still leaves them
        # (a run nobody resumes or watches, a sweep cell, builds them once, in ``finish``).
        if self.interim_reports:
            summary = build_reports(
                self.tuned, self.profile, charts=False, fills_csv=self.fills_csv
            )
            self.last_report["verdict_so_far"] = summary["verdict"]

    def write_overrides(self, overrides: Overrides) -> str:
        return self.tuned.write_overrides(overrides)

    def finish(self, note: str | None, interrupted: bool) -> dict[str, Any]:
        """Write the final reports (and charts); returns the summary for the console."""
        summary = build_reports(
            self.tuned, self.profile, charts=self.charts, fills_csv=self.fills_csv
        )
        if self.control is not None:
            summary["control"] = write_comparison(self.tuned, self.control)
        if note:
            self.tuned.append_summary(f"note: {note}")
        if interrupted:
            self.tuned.append_summary("interrupted: reports cover the committed iterations")
        summary["note"] = note
        summary["interrupted"] = interrupted
        summary["outages"] = [
            ln.iteration for ln in self.tuned.committed_lines() if ln.extra.get("outage")
        ]
        self.close()
        return summary

    def close(self) -> None:
        self.tuned.close()
        if self.control is not None:
            self.control.close()


# A committed iteration's line in summary.txt (what _summary_line writes)
_LINE = re.compile(r"^iteration (\d+)(?: \(partial\))?: this iteration's net_bps", re.M)


def _summary_line(
    iteration: int, e: EdgeSection, verdict: str, decisions: list[Decision], partial: bool
) -> str:
    net = "n/a" if e.net_bps is None else f"{e.net_bps:+.3f}"
    changes = "; ".join(d.marker() for d in decisions if d.field is not None) or "no change"
    flag = " (partial)" if partial else ""
    return (
        f"iteration {iteration}{flag}: this iteration's net_bps {net} fills {e.fills} "
        f"verdict {verdict} | {changes}"
    )
