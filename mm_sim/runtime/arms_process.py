"""The model arms in a second process, beside the primary engine instead of after it.

Why: the default soak runs four model arms, each a full engine over every event, so the arms
are four fifths of the kernel's time; run after the primary on each chunk, they are all on the
critical path. The arms depend on the primary only through the overrides it runs (tuner,
emergency and operator changes, each applied from a chunk boundary), and the primary on the
arms only through their committed iterations (the model error bars in its reports). So a forked
child runs them (all but the few the parent keeps to finish its iterations with the child:
``arms_kept_inline``, ``SplitArms``): it cuts the same chunks from the same events (its own
copy of the replay, whose boundaries depend on the feed alone), the parent sends it each change
of overrides and a
"run the next chunk" per chunk in the order the inline code would have applied them, and waits
for it only where the inline code needed its result: at an iteration's commit, at open and at
close. Every arm therefore sees the same events with the same overrides from the same event on,
and writes the same files (``tests/test_soak_identical.py`` runs a soak both ways and compares
them byte for byte).

Fork, not spawn: the child shares the events (a copy-on-write map of the feed) and the loaded
modules with the parent instead of importing and reading them again. It is used only where a
fork is safe and useful: a replayed feed (a live feed's events exist in the parent only), at
least one arm, no other thread in the parent (a Dask client's threads would not survive into
the child) and a platform with fork. ``MM_MODEL_ARMS_PROCESS``: ``auto`` (the default) forks only
when a core is idle (``core_free``), ``always`` whenever it can, ``never`` keeps the arms
inline.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from mm_sim.config import Overrides
from mm_sim.runtime.bus import EventChunk
from mm_sim.runtime.cpu_idle import cpu_quota, idle_cores, our_cpus
from mm_sim.runtime.model_arms import ModelArms

ChunkSource = Callable[[int], AsyncIterator[EventChunk]]


def can_fork() -> bool:
    return "fork" in mp.get_all_start_methods() and threading.active_count() == 1


# Idle CPUs, this process's own start-up counted as busy, from which a forked child gets a core of
# its own: on a quiet 2-core machine ~0.9-1.0, beside one busy process ~0.
FREE_CORE = 0.7


def core_free() -> tuple[bool, str]:
    """Whether a second process would get a core of its own, and what that was judged from: on
    a machine whose other work already fills the cores, the child only time-shares the parent's
    and costs a little more CPU than running the arms inline (measured: benchmarks/README.md).
    Judged from the idle time, now, of the CPUs this process may use (runtime/cpu_idle.py,
    bounded by a container's CPU limit and what its cgroup used meanwhile); where the platform
    has no /proc/stat, from the load average."""
    quota = cpu_quota()  # read once: the idle figure is bounded by it too
    limit = None if quota is None else quota.cpus
    if limit is not None and limit < 1.0 + FREE_CORE:
        return False, f"cgroup CPU limit {limit:.2f}"
    cores = len(our_cpus())
    if cores < 2:
        return False, "one CPU"
    idle = idle_cores(quota)
    if idle is not None:
        within = "" if limit is None else f" (cgroup CPU limit {limit:.2f})"
        return idle >= FREE_CORE, f"idle cores {idle:.2f}{within}"
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - no load average on this platform
        return True, "no load figures"
    return load + 1.0 <= cores - 0.5, f"load average {load:.2f}"


def wanted(setting: str) -> tuple[bool, str]:
    """``MM_MODEL_ARMS_PROCESS``: always, never, or auto (a core is free); and why."""
    if setting != "auto":
        return setting == "always", f"MM_MODEL_ARMS_PROCESS={setting}"
    return core_free()


# The primary's own work per chunk and iteration (its engine, the recorder, the reports rebuilt
# at each commit, the tuner), in model arms' worth: on the default soak the parent was busy
# ~0.55 s an iteration and each arm took ~0.27 s of the child's.
PRIMARY_IN_ARMS = 2.0


def arms_kept_inline(n: int) -> int:
    """How many of ``n`` arms the parent runs itself, so that both processes finish an
    iteration at about the same time. The default soak's five arms all in the child: the
    parent waited for it 3.9 s of a 7.6 s run (a full pipe, then at each commit); one kept
    inline: 1.8-2.0 s of 6.8-7.4 s; two: 0.63 s of 6.6 s."""
    return max(0, math.ceil((n - PRIMARY_IN_ARMS) / 2))


def drive(chunks: AsyncIterator[EventChunk]) -> Iterator[EventChunk]:
    """An async chunk generator read without an event loop: the replay only ever awaits
    ``asyncio.sleep(0)`` (and no pacing sleep without ``--speed``, which the child never has),
    which yields None to whoever drives it."""
    while True:
        step: Any = chunks.__anext__()
        try:
            while True:
                step.send(None)
        except StopIteration as done:
            yield done.value
        except StopAsyncIteration:
            return


class ArmsProcess:
    """``ModelArms``' interface (open, run, set_overrides, end_iteration, close) served by a
    forked child. ``make`` builds the arms in the child; ``source(start_iteration)`` gives the
    replay's chunks from an iteration on (the same call the parent's feed makes)."""

    def __init__(self, make: Callable[[], ModelArms], source: ChunkSource) -> None:
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        # Whatever the parent has buffered would otherwise be written again by the child.
        sys.stdout.flush()
        sys.stderr.flush()
        self._proc = ctx.Process(
            target=_serve,
            args=(child, self._conn, os.getpid(), make, source),
            name="mm_sim-model-arms",
            daemon=True,
        )
        self._proc.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def _gone(self) -> RuntimeError:
        self._proc.join(timeout=5)
        return RuntimeError(
            f"the model arms' process ended unexpectedly (exit code {self._proc.exitcode})"
        )

    def _send(self, *msg: Any) -> None:
        try:
            self._conn.send(msg)
        except OSError:  # a broken pipe: the child is gone
            raise self._gone() from None

    def _call(self, *msg: Any) -> None:
        self._send(*msg)
        try:
            reply = self._conn.recv()
        except EOFError:
            raise self._gone() from None
        if reply is not None:
            last = reply.strip().splitlines()[-1] if reply.strip() else "no traceback"
            raise RuntimeError(f"the model arms' process failed: {last}\n{reply}")

    def open(self, run_info: Mapping[str, Any], resume: bool, committed: int | None) -> None:
        self._call("open", dict(run_info), resume, committed)

    def run(self, events: np.ndarray, flush: bool, iteration: int) -> None:
        first = int(events["exch_ts"][0]) if len(events) else None
        self._send("run", flush, iteration, len(events), first)  # no reply: they overlap

    def set_overrides(self, o: Overrides) -> None:
        self._send("overrides", o)

    def end_iteration(
        self, iteration: int, overrides: Overrides, ws_lag_p95_ms: float, partial: bool
    ) -> None:
        self._call("end", iteration, overrides, ws_lag_p95_ms, partial)

    def close(self) -> None:
        if self._proc.is_alive():
            self._call("close")
        self._proc.join(timeout=30)
        self._conn.close()

    def __del__(self) -> None:  # an abandoned run (an exception in the parent) stops the child
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.is_alive():
            proc.terminate()


def _serve(
    conn: Connection,
    parent_end: Connection,
    parent: int,
    make: Callable[[], ModelArms],
    source: ChunkSource,
) -> None:
    # The parent's end of the pipe came along with the fork: closed, so that the parent's
    # death is an end of file here instead of a pipe this process keeps open itself.
    parent_end.close()
    # Ctrl-C goes to the whole process group; the parent finishes the chunk and commits, and
    # needs the arms to do the same, so the signal is the parent's alone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    failure: str | None = None  # the first error, reported at the next call that waits
    arms: ModelArms | None = None
    chunks: Iterator[EventChunk] | None = None
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent is gone
            return
        if os.getppid() != parent:
            # Killed with chunks still queued: their records would be dropped on resume
            # anyway, and the arms' directory locks must not outlive the run.
            return
        op, args = msg[0], msg[1:]
        if failure is None:
            try:
                if op == "open":
                    arms = make()
                    arms.open(*args)
                    committed = args[2]
                    chunks = drive(source(0 if committed is None else committed + 1))
                elif op == "run":
                    assert arms is not None and chunks is not None
                    _run(arms, chunks, *args)
                elif op == "overrides":
                    assert arms is not None
                    arms.set_overrides(args[0])
                elif op == "end":
                    assert arms is not None
                    arms.end_iteration(*args)
                elif op == "close" and arms is not None:
                    arms.close()
            except BaseException:
                failure = traceback.format_exc()
        if op in ("open", "end", "close"):
            conn.send(failure)
        if op == "close":
            return


def _run(
    arms: ModelArms,
    chunks: Iterator[EventChunk],
    flush: bool,
    iteration: int,
    n: int,
    first: int | None,
) -> None:
    chunk = next(chunks)
    ev = chunk.events
    got = int(ev["exch_ts"][0]) if len(ev) else None
    if (chunk.iteration, len(ev), got) != (iteration, n, first):
        raise RuntimeError(
            f"the arms' replay is out of step with the primary's: chunk of iteration "
            f"{chunk.iteration} with {len(ev)} events from {got}, the primary's: iteration "
            f"{iteration}, {n} events from {first}"
        )
    arms.run(ev, flush, iteration)


class SplitArms:
    """Some arms inline, the rest in a forked child (``ArmsProcess``): ``ModelArms``'
    interface, the child's part first so that it runs while the parent does the inline part.
    Each arm has its own run directory, so which process runs it changes no file."""

    def __init__(self, inline: ModelArms, child: ArmsProcess) -> None:
        self.inline = inline
        self.child = child

    def open(self, run_info: Mapping[str, Any], resume: bool, committed: int | None) -> None:
        self.child.open(run_info, resume, committed)
        self.inline.open(run_info, resume, committed)

    def run(self, events: np.ndarray, flush: bool, iteration: int) -> None:
        self.child.run(events, flush, iteration)
        self.inline.run(events, flush, iteration)

    def set_overrides(self, o: Overrides) -> None:
        self.child.set_overrides(o)
        self.inline.set_overrides(o)

    def end_iteration(
        self, iteration: int, overrides: Overrides, ws_lag_p95_ms: float, partial: bool
    ) -> None:
        self.inline.end_iteration(iteration, overrides, ws_lag_p95_ms, partial)
        self.child.end_iteration(iteration, overrides, ws_lag_p95_ms, partial)

    def close(self) -> None:
        self.inline.close()
        self.child.close()
