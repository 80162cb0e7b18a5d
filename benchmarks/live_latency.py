"""Live path latency: a websocket message's arrival → the quote decision reacting to it.

The issue's target: p99 <= 200 µs in-process, against the fake exchange at 5,000 messages/s.

Set-up (what ``measure`` does):

1. ``python -m mm_sim fake-exchange --msg-rate 5000`` runs in its own process on a free
   loopback port (so it never takes the consumer's event loop), serving the synthetic market in
   Binance's wire format; ``--msg-rate`` sets its clock speed from the feed's own message rate.
   It sends each trade at its own (scaled) time and each 100 ms depth diff at its bucket's end.
2. In this process: the real client (``open_live`` → ``BinanceClient``, the same code as the
   soak and ``record``) in push mode (``set_sink``), and a real ``Engine`` with profile S1. For
   every frame the reader is handed, the client parses it, runs the Binance book sync and
   stages events, and the sink calls ``Engine.run_live`` on them: the strategy decides inside
   that call, once per event.
   The client runs twice: with ``busy_poll`` (its event loop spins, polling the socket with a
   zero timeout: one core at 100 %, the way latency-sensitive trading processes run) and with
   the loop sleeping in the kernel between frames. The target is judged on the first; both
   are reported.
3. After a warm-up (connection, snapshot, numba kernels loaded, ``gc.collect`` + ``gc.freeze``
   and the backlog that collection leaves drained), messages are counted and timed for the
   measurement window. The synthetic feed is an hour long, so it starts over at most once in
   a window (the fake exchange then sends one large diff to the new book).

Timestamps (why the figure is honest):

- arrival ``t_rx``: ``time.monotonic_ns()`` taken inside the websocket connection's
  ``data_received``, i.e. when the socket read that completed the frame returned to Python,
  *before* the websocket library parses the frame. That is earlier than "when the frame is
  handed to us", so library parsing and the hand-over to the reader task are inside the figure.
- decision ``t_dec``: ``time.monotonic_ns()`` right after ``Engine.run_live`` returns for the
  events of that frame (or of the frames taken together with it when the client was behind).
  The decision for each event is made inside the call, so this is an upper bound for all of
  them. Frames that produce no events (a diff already in the book, a duplicate trade) have no
  decision and are counted apart.
- both stamps come from CLOCK_MONOTONIC in the same process; latency = ``t_dec - t_rx``.

Not inside ``t_dec - t_rx``: time a frame's bytes waited in the kernel while the process was
busy with the previous ones. The end-to-end figure covers that: for each depth/trade message,
exchange event time (``E``/``T``, which the fake exchange sets to when it is due to send) →
decision, on the exchange clock and converted back to wall µs (``E`` has 1 ms resolution on the
exchange clock, i.e. 1/speed ms of wall time). It also contains the fake exchange's own send
lateness, reported by the server next to it.

Two paths are measured (issue 14): push mode above, and **pull mode with 50 ms chunks**, the
path the soak and paper trading actually run (``LiveFeed.chunks`` → ``Engine.run_live`` per
chunk): there a frame's decision comes when its chunk is handed on, so the chunk window is
part of the figure. For both, end to end is measured from the exchange event time on the
client's venue-corrected clock (the clock offset estimated from the server time, applied as in
replay), so the sender's queueing is inside it. Where the machine has two or more cores and
is idle (1-min load below ``PIN_MAX_LOAD``) the fake exchange is pinned to one core and this
process to another (``pinned`` says which, or why not).

On a shared machine wall-clock figures measure the other programs too, so push mode also
reports ``latency_cpu_us`` and ``service_cpu_us``: the same intervals on the client thread's
CPU clock (the time it was not waiting for a core), and ``main`` runs push mode several times
and reports the run with the best p99 in full (``push_runs`` lists every run with its load).

Tail attribution: a frame that arrived less than ``CLUSTER_US`` (30 µs) after the previous one
was due together with it (the workload's own clustering: trades and the diff of the same
instant); its latency includes waiting for its neighbour. ``tail`` splits the frames above the
p99 into those clustered frames and the rest (ours).

``python -m benchmarks.live_latency [full|quick|tiny]`` prints the result as JSON.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import resource
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TARGET_RATE = 5000.0
TARGET_P99_US = 200.0
CLUSTER_US = 30.0  # frames arriving closer than this to the previous one were due together
PULL_CHUNK_MS = 50.0  # the soak's live chunking (feed definition default)
# seconds measured, seconds of warm-up after the book is synced
SIZES: dict[str, tuple[float, float]] = {
    "full": (25.0, 3.0),
    "quick": (5.0, 1.0),
    "tiny": (2.0, 1.0),
}


def _run(coro: Any) -> Any:
    """The event loop the soak uses: uvloop where installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def _pct(x: np.ndarray) -> dict[str, float | None]:
    if not len(x):
        return {"p50": None, "p99": None, "p99_9": None, "max": None, "mean": None}
    return {
        "p50": float(np.percentile(x, 50)),
        "p99": float(np.percentile(x, 99)),
        "p99_9": float(np.percentile(x, 99.9)),
        "max": float(x.max()),
        "mean": float(x.mean()),
    }


def _service_times(lat: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Per frame: decision - max(arrival, previous decision), in µs: the latency without the
    time spent queued behind earlier frames (what one frame costs when the client is free)."""
    if not len(lat):
        return np.zeros(0)
    rx = dec - lat
    new_call = np.r_[True, dec[1:] != dec[:-1]]
    prev_dec = np.where(new_call, np.r_[dec[0], dec[:-1]], 0)
    prev_dec = np.maximum.accumulate(prev_dec)  # previous call's decision, carried over a call
    prev_dec[0] = rx[0]
    return (dec - np.maximum(rx, prev_dec)) / 1e3


def _lags(calls: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per frame decided: receive time - event time (exchange-clock ns) and the event time
    (when the server was due to send it). Frames decided together (behind) each get the
    largest lag among them and the latest event time."""
    lag: list[int] = []
    due: list[int] = []
    for events, k in calls:
        if k == 1:
            r = events[-1]
            lag.append(int(r["local_ts"] - r["exch_ts"]))
            due.append(int(r["exch_ts"]))
        else:
            lag.extend([int((events["local_ts"] - events["exch_ts"]).max())] * k)
            due.extend([int(events["exch_ts"].max())] * k)
    return np.asarray(lag, dtype=np.int64), np.asarray(due, dtype=np.int64)


def _cpu_pressure() -> float | None:
    """Share of the last 10 s some task waited for a CPU (Linux PSI), a sign of contention."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def _tail(lat_us: np.ndarray, due_ns: np.ndarray, speed: float) -> dict[str, Any]:
    """Samples above the p99: how many were due (exchange time, converted to wall µs) within
    CLUSTER_US of the previous message (the workload's clustering) and how many were not (our
    own tail). Arrival times would not do: frames read together share one."""
    if len(lat_us) < 2:
        return {"p99_us": None, "frames_over_p99": 0, "clustered": 0, "ours": 0}
    order = np.argsort(due_ns, kind="stable")
    gap_us = np.empty(len(due_ns))
    gap_us[order] = np.r_[np.inf, np.diff(due_ns[order]) / speed / 1e3]
    p99 = float(np.percentile(lat_us, 99))
    over = lat_us > p99
    clustered = over & (gap_us < CLUSTER_US)
    return {
        "p99_us": p99,
        "cluster_us": CLUSTER_US,
        "frames_over_p99": int(over.sum()),
        "clustered": int(clustered.sum()),
        "ours": int((over & ~clustered).sum()),
        "share_clustered": float(np.mean(gap_us < CLUSTER_US)),
    }


PIN_MAX_LOAD = 0.7  # pin only when the machine is this idle (1-min load average)
_FIRST_LOAD: dict[str, float] = {}


def _pin(server_pid: int) -> dict[str, Any] | None:
    """Server on one core, this process on another, where the machine allows and is idle.

    On a machine others are using, pinning hurts more than it helps: a pinned process cannot
    leave a core another program is busy on (measured with other jobs at load 4-5: the pinned
    fake exchange fell seconds behind its schedule, and every frame queued behind it).
    ``MM_BENCH_PIN=1`` / ``0`` forces the choice."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2:
        return None
    forced = os.environ.get("MM_BENCH_PIN")
    # the load before this bench's first run (its own runs raise the average)
    load = _FIRST_LOAD.setdefault("load", os.getloadavg()[0])
    if forced == "0" or (forced != "1" and load > PIN_MAX_LOAD):
        return {"skipped": f"1-min load average {load:.2f} > {PIN_MAX_LOAD}" if forced != "0"
                else "MM_BENCH_PIN=0"}  # fmt: skip
    try:
        os.sched_setaffinity(server_pid, {cores[0]})
        os.sched_setaffinity(0, {cores[1]})
    except OSError:
        return None
    return {"server_core": cores[0], "client_core": cores[1]}


def _unpin(cores: list[int]) -> None:
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cores))


def _start_server(rate: float, market: str, seed: int) -> tuple[subprocess.Popen[str], str, str]:
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".venv" / "numba-cache"))
    cmd = [
        sys.executable, "-m", "mm_sim", "fake-exchange", "--port", "0", "--msg-rate", f"{rate:g}",
        "--market", market, "--seed", str(seed), "--duration-s", "3600",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"ws://127\.0\.0\.1:\d+", line)
    if not m:
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"fake exchange did not start: {line!r} {err[-500:]}")
    return proc, m.group(0), " ".join(cmd[1:])


def _stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _warm_kernels(instrument: Any) -> None:
    """Load (or compile) the engine's kernels on a throwaway engine, outside any timing."""
    from mm_sim.config import Overrides, load_profile
    from mm_sim.core.engine import Engine
    from mm_sim.events import EVENT_DTYPE, KIND_DEPTH

    ev = np.zeros(2, dtype=EVENT_DTYPE)
    ev["kind"] = KIND_DEPTH
    ev["side"] = [1, -1]
    ev["price"] = [100.0, 100.0 + instrument.tick_size]
    ev["qty"] = 1.0
    e = Engine(load_profile("S1"), Overrides(), instrument, 1)
    e.run_live(ev)
    e.run(ev)


async def _run_client(url: str, seconds: float, warmup_s: float, busy_poll: bool) -> dict[str, Any]:
    import aiohttp

    from mm_sim.config import Overrides, load_profile
    from mm_sim.core.engine import Engine
    from mm_sim.feeds.spec import BinanceLiveFeedSpec, resolve_feed
    from mm_sim.venues.binance.client import CATCH_UP
    from mm_sim.venues.binance.live_source import open_live
    from mm_sim.venues.binance.sync import SyncState

    spec = resolve_feed(url)
    assert isinstance(spec, BinanceLiveFeedSpec), spec
    spec = spec.model_copy(update={"busy_poll": busy_poll})
    feed = await open_live(spec, start=False)
    client = feed.client
    _warm_kernels(feed.instrument)
    engine = Engine(load_profile("S1"), Overrides(), feed.instrument, 1)
    speed = float(feed.identity["clock_speed"])
    mono = time.monotonic_ns

    lat = array("q")  # t_dec - t_rx per frame that produced events, ns
    dec = array("q")  # t_dec of the same frames
    lat_cpu = array("q")  # the same on this thread's CPU clock (time not spent preempted)
    dec_cpu = array("q")  # the thread's CPU clock at t_dec
    calls: list[tuple[np.ndarray, int]] = []  # (events, frames) per engine call
    state = {"on": False}
    thread_ns = time.thread_time_ns
    rx_cpu: dict[int, int] = {}  # a socket read's arrival stamp -> thread CPU time then
    cur: dict[str, Any] = {"conn": None, "cpu": 0}  # the read being handled

    class Stamped(client._connection_class):  # type: ignore[name-defined]
        """The client's connection, also noting the thread's CPU clock at each socket read
        (the frames of a read are decided inside it, in push mode)."""

        def data_received(self, data: bytes) -> None:
            c = thread_ns()
            cur["conn"], cur["cpu"] = self, c
            super().data_received(data)
            rx_cpu[self.rx_mono] = c

    client._connection_class = Stamped

    def sink(events: np.ndarray, arrivals: list[int]) -> None:
        engine.run_live(events)
        t_dec = mono()
        if not state["on"]:
            return
        c_dec = thread_ns()
        # Bookkeeping after the stamps, kept small: it delays the next frame. The events are
        # kept (views the client never reuses) and read after the window.
        now_rx = cur["conn"].rx_mono if cur["conn"] is not None else -1
        if len(arrivals) == 1:
            a = arrivals[0]
            lat.append(t_dec - a)
            dec.append(t_dec)
            lat_cpu.append(c_dec - (cur["cpu"] if a == now_rx else rx_cpu.get(a, c_dec)))
            dec_cpu.append(c_dec)
        else:
            lat.extend([t_dec - a for a in arrivals])
            dec.extend([t_dec] * len(arrivals))
            lat_cpu.extend(
                [c_dec - (cur["cpu"] if a == now_rx else rx_cpu.get(a, c_dec)) for a in arrivals]
            )
            dec_cpu.extend([c_dec] * len(arrivals))
        calls.append((events, len(arrivals)))

    client.set_sink(sink)
    await client.start()
    try:
        deadline = time.monotonic() + 30
        while client.sync.state is not SyncState.SYNCED:
            if time.monotonic() > deadline or client.sink_error is not None:
                raise RuntimeError(f"client never synced: {client.counters.as_dict()}")
            await asyncio.sleep(0.05)
        # Start-up objects out of the cyclic GC; this collection stalls the stream for tens of
        # ms, so it comes before the warm-up, which drains the backlog it leaves.
        gc.collect()
        gc.freeze()
        await asyncio.sleep(warmup_s)
        gc_pauses: list[float] = []
        gc_t = [0.0]

        def gc_cb(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                gc_t[0] = time.perf_counter()
            else:
                gc_pauses.append((time.perf_counter() - gc_t[0]) * 1e6)

        gc.callbacks.append(gc_cb)
        c0 = client.counters.as_dict()
        s0 = client.sync.counters.as_dict()
        e0 = engine.counters()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        load0 = os.getloadavg()
        psi0 = _cpu_pressure()
        state["on"] = True
        await asyncio.sleep(seconds)
        state["on"] = False
        wall = time.monotonic() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        gc.callbacks.remove(gc_cb)
        c1 = client.counters.as_dict()
        s1 = client.sync.counters.as_dict()
        e1 = engine.counters()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{spec.rest_base}/fake/info") as resp,
        ):
            server = await resp.json()
    finally:
        await client.close()
    if client.sink_error is not None:
        raise RuntimeError(f"sink failed: {client.sink_error!r}")
    lat_us = np.frombuffer(lat, dtype=np.int64) / 1e3
    dec_ns = np.frombuffer(dec, dtype=np.int64)
    service_us = _service_times(np.frombuffer(lat, dtype=np.int64), dec_ns)
    lag, due = _lags(calls)
    # end to end = (event time -> receive, exchange clock back to wall) + (receive -> decision)
    e2e_us = lag / speed / 1e3 + lat_us
    bf = np.array([k for _, k in calls], dtype=np.int64)
    # frames decided in one engine call share their t_dec
    call_dec, call_frames = np.unique(dec_ns, return_counts=True)
    messages = c1["messages"] - c0["messages"]
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "wall_s": wall,
        "messages": messages,
        "msgs_per_s": messages / wall,
        "diffs": c1["diffs"] - c0["diffs"],
        "trades": c1["trades"] - c0["trades"],
        "frames_with_decision": len(lat_us),
        "frames_without_events": messages - len(lat_us),
        "latency_us": _pct(lat_us),
        "share_over_target": float(np.mean(lat_us > TARGET_P99_US)) if len(lat_us) else None,
        "tail": _tail(lat_us, due, speed),
        # the same latency on the client thread's CPU clock: without the time the thread
        # waited for a core (other processes on a shared machine), with the work on the
        # frames ahead of it in the same read
        "latency_cpu_us": _pct(np.frombuffer(lat_cpu, dtype=np.int64) / 1e3),
        # and the service time on it: what a frame itself cost the thread, load or not
        "service_cpu_us": _pct(
            _service_times(
                np.frombuffer(lat_cpu, dtype=np.int64), np.frombuffer(dec_cpu, dtype=np.int64)
            )
        ),
        "clock": feed.identity.get("clock"),
        "service_us": _pct(service_us),
        "end_to_end_us": _pct(e2e_us),
        "end_to_end_tail": _tail(e2e_us, due, speed),
        "engine_calls": len(bf),
        "frames_per_engine_call": {
            "mean": float(bf.mean()) if len(bf) else None,
            "p99": float(np.percentile(bf, 99)) if len(bf) else None,
            "max": int(bf.max()) if len(bf) else None,
            "share_of_frames_batched": float(bf[bf > 1].sum() / bf.sum()) if bf.sum() else None,
        },
        "resyncs": s1["resyncs"] - s0["resyncs"],
        "gaps": s1["gaps"] - s0["gaps"],
        "overflow": c1["overflow"] - c0["overflow"],
        "resyncs_total": s1["resyncs"],
        "fills": e1["fills"] - e0["fills"],
        "actions": sum(e1["attempts"].values()) - sum(e0["attempts"].values()),
        "decisions": e1["decisions"] - e0["decisions"],
        "client_cpu_s": cpu,
        "client_cpu_us_per_msg": cpu / messages * 1e6 if messages else None,
        "client_involuntary_switches": r1.ru_nivcsw - r0.ru_nivcsw,
        "cpu_pressure_some_avg10": [psi0, _cpu_pressure()],
        "gc_collections": len(gc_pauses),
        "gc_pause_max_us": max(gc_pauses) if gc_pauses else 0.0,
        "loadavg_1min_at_start": load0[0],
        "loadavg_1min_at_end": os.getloadavg()[0],
        "clock_speed": speed,
        # when (s into the window) a backlog of more than the client's catch-up threshold was
        # decided together, and the server's own send stalls (> 1 ms late) in the window
        "catch_up_frames": CATCH_UP,
        "backlogs": [
            [round(int(t) / 1e9 - t0, 4), int(n)]
            for t, n in zip(call_dec, call_frames, strict=True)
            if n > CATCH_UP
        ],
        "server_stalls": [
            [round(t - t0, 4), round(w)]
            for t, w in server.get("send", {}).get("stalls", {}).get("episodes", [])
            if 0 <= t - t0 <= wall
        ],
        "server": {k: v for k, v in server.get("send", {}).items() if k != "stalls"},
        "server_stats": server.get("stats", {}),
    }


async def _run_pull(url: str, seconds: float, warmup_s: float) -> dict[str, Any]:
    """The soak's path: ``LiveFeed.chunks`` with 50 ms chunks, ``Engine.run_live`` per chunk.

    Per frame: arrival (socket read) → the decision after its chunk's engine call; per event:
    exchange event time → that decision on the venue-corrected clock (so the sender's queueing
    and the chunk window are inside it)."""
    from mm_sim.config import Overrides, load_profile
    from mm_sim.core.engine import Engine
    from mm_sim.events import KIND_DEPTH, KIND_TRADE
    from mm_sim.feeds.spec import BinanceLiveFeedSpec, resolve_feed
    from mm_sim.venues.binance.live_source import open_live
    from mm_sim.venues.binance.sync import SyncState

    spec = resolve_feed(url)
    assert isinstance(spec, BinanceLiveFeedSpec), spec
    spec = spec.model_copy(update={"chunk_ms": PULL_CHUNK_MS})
    feed = await open_live(spec, start=False)
    _warm_kernels(feed.instrument)
    engine = Engine(load_profile("S1"), Overrides(), feed.instrument, 1)
    speed = float(feed.identity["clock_speed"])
    feed.latencies_ns = []  # frame received -> chunk handed on, filled by LiveFeed
    await feed.client.start()
    lat: list[float] = []
    e2e: list[np.ndarray] = []
    due: list[np.ndarray] = []
    chunks = 0
    mono = time.monotonic_ns
    try:
        t_sync = time.monotonic() + 30
        t0 = None
        start: tuple[float, Any, int] | None = None  # window start: time, rusage, messages
        async for chunk in feed.chunks(1, 10**18):
            t_resume = mono()
            seen = len(feed.latencies_ns)
            engine.run_live(chunk.events)
            t_dec = mono()
            ex_dec = feed.clock()
            if t0 is None:
                if feed.client.sync.state is SyncState.SYNCED:
                    t0 = time.monotonic() + warmup_s
                elif time.monotonic() > t_sync:
                    raise RuntimeError(f"never synced: {feed.client.counters.as_dict()}")
                feed.latencies_ns.clear()
                continue
            now = time.monotonic()
            if now < t0:
                feed.latencies_ns.clear()
                continue
            if now > t0 + seconds:
                break
            if start is None:
                start = (
                    now,
                    resource.getrusage(resource.RUSAGE_SELF),
                    feed.client.counters.messages,
                )
            engine_ns = t_dec - t_resume
            new = feed.latencies_ns[:seen]
            lat.extend((x + engine_ns) / 1e3 for x in new)
            feed.latencies_ns.clear()
            ev = chunk.events
            m = (ev["kind"] == KIND_DEPTH) | (ev["kind"] == KIND_TRADE)
            times = np.unique(ev["exch_ts"][m])  # one sample per message time
            e2e.append((ex_dec - times) / speed / 1e3)
            due.append(times)
            chunks += 1
        c = feed.client.counters.as_dict()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await feed.close()
    cpu_per_msg = None
    if start is not None:
        wall = time.monotonic() - start[0]
        msgs = c["messages"] - start[2]
        cpu = (r1.ru_utime - start[1].ru_utime) + (r1.ru_stime - start[1].ru_stime)
        cpu_per_msg = cpu / msgs * 1e6 if msgs else None
    lat_us = np.asarray(lat)
    e2e_us = np.concatenate(e2e) if e2e else np.zeros(0)
    due_ns = np.concatenate(due) if due else np.zeros(0, dtype=np.int64)
    return {
        "path": f"pull, {PULL_CHUNK_MS:g} ms chunks (the soak's and paper trading's)",
        "frames_with_decision": len(lat_us),
        "chunks": chunks,
        "latency_us": _pct(lat_us),
        "end_to_end_us": _pct(e2e_us),
        "end_to_end_tail": _tail(e2e_us, due_ns, speed),
        "clock": feed.identity.get("clock"),
        "overflow": c["overflow"],
        "msgs_per_s": (c["messages"] - start[2]) / wall if start is not None else None,
        # this process's CPU (client and engine, the loop sleeping between frames) per message
        "client_cpu_us_per_msg": cpu_per_msg,
        "loadavg_1min_at_end": os.getloadavg()[0],
    }


def measure_pull(size: str = "quick", rate: float = TARGET_RATE, market: str = "spot") -> dict:
    """The pull path at ``rate`` messages/s (see ``_run_pull``)."""
    seconds, warmup_s = SIZES[size]
    proc, url, cmd = _start_server(rate, market, seed=1)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = _pin(proc.pid)
    try:
        res = _run(_run_pull(url, seconds, warmup_s))
    finally:
        _stop_server(proc)
        _unpin(cores)
    return {"server_command": f"python {cmd}", "pinned": pinned, **res}


def measure(
    size: str = "full", rate: float = TARGET_RATE, market: str = "spot", busy_poll: bool = True
) -> dict[str, Any]:
    """Run the fake exchange at ``rate`` messages/s in a subprocess and time the live path;
    ``busy_poll`` is the client's option (a spinning event loop, one core at 100 %)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    seconds, warmup_s = SIZES[size]
    proc, url, cmd = _start_server(rate, market, seed=1)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = _pin(proc.pid)
    try:
        res = _run(_run_client(url, seconds, warmup_s, busy_poll))
    finally:
        _stop_server(proc)
        _unpin(cores)
    res["pinned"] = pinned
    lat = res["latency_us"]
    return {
        "size": size,
        "target": {"msgs_per_s": rate, "p99_us": TARGET_P99_US},
        "met": (
            lat["p99"] is not None
            and lat["p99"] <= TARGET_P99_US
            and res["msgs_per_s"] >= 0.95 * rate
        ),
        "server_command": f"python {cmd}",
        "market": market,
        "busy_poll": busy_poll,
        **res,
        "method": (
            "t_rx = monotonic ns in the websocket connection's data_received (socket read "
            "returned, before frame parsing); t_dec = monotonic ns right after Engine.run_live "
            "returned for the frame's events (every decision is made inside that call); same "
            "process, same clock. The fake exchange runs in its own process. end_to_end_us = "
            "exchange event time (E/T, when the server was due to send) -> decision, on the "
            "exchange clock / speed: adds kernel and loopback time, time queued behind earlier "
            "frames, and the server's own send lateness (server.late_us)."
        ),
    }


def measure_server_max(seconds: float = 5.0, rate: float = 100_000.0) -> dict[str, Any]:
    """The fake exchange asked for far more than it can send: its achieved rate is its ceiling.

    A bare websocket reader (no parsing) in this process counts what arrives.
    """
    from websockets.asyncio.client import connect

    proc, url, cmd = _start_server(rate, "spot", seed=1)

    async def count() -> tuple[int, float]:
        uri = f"{url}/stream?streams=synthbtcusdt@depth@100ms/synthbtcusdt@trade"
        async with connect(uri, compression=None, max_queue=None, max_size=1 << 24) as ws:
            await asyncio.wait_for(ws.recv(), 10)
            n = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                await ws.recv()
                n += 1
            return n, time.monotonic() - t0

    try:
        n, wall = _run(count())
    finally:
        _stop_server(proc)
    return {"asked_msgs_per_s": rate, "msgs_per_s": n / wall, "messages": n, "wall_s": wall,
            "server_command": f"python {cmd}"}  # fmt: skip


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    lat, cpu = r["latency_us"], r.get("latency_cpu_us") or {}
    return {
        "p50_us": lat["p50"],
        "p99_us": lat["p99"],
        "cpu_p50_us": cpu.get("p50"),
        "cpu_p99_us": cpu.get("p99"),
        "service_cpu_p50_us": (r.get("service_cpu_us") or {}).get("p50"),
        "service_cpu_p99_us": (r.get("service_cpu_us") or {}).get("p99"),
        "msgs_per_s": r.get("msgs_per_s"),
        "loadavg_1min": r.get("loadavg_1min_at_start"),
        "pinned": r.get("pinned"),
    }


def main(argv: list[str] | None = None) -> int:
    """``[full|quick|tiny] [REPEAT]``: push mode REPEAT times (full: 3), the best p99 of them
    reported whole (min-of-N: on a shared machine the others' load only ever adds), then pull
    mode and the fake exchange's ceiling."""
    args = sys.argv[1:] if argv is None else argv
    size = args[0] if args else "quick"
    repeat = int(args[1]) if len(args) > 1 else (3 if size == "full" else 1)
    runs = [measure(size) for _ in range(max(1, repeat))]
    out = min(runs, key=lambda r: r["latency_us"]["p99"] or float("inf"))
    out["push_runs"] = [_summary(r) for r in runs]
    out["pull_mode"] = measure_pull(size)
    if size != "tiny":
        out["fake_exchange_max"] = measure_server_max(5.0 if size == "full" else 3.0)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
