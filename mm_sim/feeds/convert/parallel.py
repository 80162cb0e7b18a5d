"""Many conversions at once on the sweep's Dask cluster: one task per input file (a LOBSTER
message/orderbook pair, the tardis files of one exchange, day and symbol, or the Binance CSVs of
one symbol and day), one feed each.

Why Dask: days × symbols of recordings are where users outgrow one machine first, and the
sweep already knows how to start a local cluster or join one (``mm_sim.sweep.cluster.connect``).
Each task publishes its feed the way the single ``convert`` does (``publish``: staged, checked,
renamed into place), streams its input in bounded memory, and returns a small summary. A rerun
skips every output that is already a complete feed (its sidecar's size and hash check out), so
an interrupted run resumes where it stopped; a half-published pair is converted again.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mm_sim.errors import UserError
from mm_sim.events import open_feed
from mm_sim.feeds.convert.base import ConvertOptions

# tardis.dev's download names: <exchange>_<data type>_<YYYY-MM-DD>_<symbol>.csv.gz
_TARDIS_TYPE = re.compile(r"_(incremental_book_L2|trades|book_snapshot_\d+|quotes)_")
# Binance public CSV names: SYMBOL_T_DEPTH_YYYY-MM-DD_depth_{snap,update}.csv and
# SYMBOL-{trades,aggTrades}-YYYY-MM-DD.csv
_BINANCE_CSV_DAY = re.compile(
    r"^(?P<sym>[A-Z0-9]+(?:_[A-Z0-9]+)??)(?:_T_DEPTH_|-trades-|-aggTrades-)"
    r"(?P<day>\d{4}-\d{2}(?:-\d{2})?)"
)
_SUFFIXES = (".gz", ".csv", ".txt", ".json", ".jsonl", ".npy")


@dataclass
class Job:
    key: str  # the output's stem
    inputs: list[str]
    target: str


def _stem(name: str) -> str:
    while True:
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
        else:
            return name


def plan(fmt: str, inputs: list[Path], out_dir: Path, opts: ConvertOptions) -> list[Job]:
    """The tasks of a run: which inputs make one feed, and its name in ``out_dir``."""
    groups: dict[str, list[Path]] = {}
    if fmt == "lobster":
        from mm_sim.feeds.convert.lobster import pair_inputs

        for pair in pair_inputs(inputs, opts.extra.get("ticker"), opts.extra.get("date")):
            key = _stem(pair.message.name).replace("_message", "")
            groups.setdefault(key, []).extend([pair.message, pair.orderbook])
    elif fmt == "tardis":
        for p in inputs:
            groups.setdefault(_TARDIS_TYPE.sub("_", _stem(p.name)), []).append(p)
    elif fmt == "binance-csv":
        # One day of one symbol: its depth snapshot and update files and its trades.
        for p in inputs:
            m = _BINANCE_CSV_DAY.match(p.name)
            key = f"{m['sym']}_{m['day']}" if m else _stem(p.name)
            groups.setdefault(key, []).append(p)
    else:
        stems = [_stem(p.name) for p in inputs]
        for p, stem in zip(inputs, stems, strict=True):
            # Same name in two folders (spot/ and usdm/ of one day): the folder tells them apart.
            key = f"{p.parent.name}_{stem}" if stems.count(stem) > 1 else stem
            if key in groups:
                raise UserError(f"{p} and {groups[key][0]} would both become {key}.npy: rename one")
            groups[key] = [p]
    return [
        Job(key, [str(p.resolve()) for p in files], str((out_dir / f"{key}.npy").resolve()))
        for key, files in groups.items()
    ]


def is_done(job: Job) -> bool:
    """Whether the job's output is already a complete feed (a rerun skips it)."""
    try:
        open_feed(Path(job.target), check=False)
    except Exception:  # absent, half published, or not a feed: (re)convert
        return False
    return True


def run_job(
    fmt: str,
    job: dict[str, Any],
    opts: dict[str, Any],
    allow_bad_lines: bool,
    allow_book_loss: bool = False,
) -> dict[str, Any]:
    """One task, on a worker: convert and publish; a summary, or the user-facing error."""
    from mm_sim.errors import FeedError
    from mm_sim.feeds.convert.publish import publish

    t0 = time.perf_counter()
    target = Path(job["target"])
    # An output that exists here is not a complete feed (is_done said so): replace it if
    # it is ours (publish refuses anything else).
    force = target.exists() or target.with_suffix(".json").exists()
    options = ConvertOptions(**opts)
    try:
        result, summary = publish(
            fmt,
            [Path(p) for p in job["inputs"]],
            target,
            options,
            allow_bad_lines,
            force,
            allow_book_loss=allow_book_loss,
        )
    except (UserError, FeedError) as exc:
        return {**job, "ok": False, "error": str(exc), "seconds": time.perf_counter() - t0}
    return {
        **job,
        "ok": True,
        "events": result.events,
        "lines": result.lines,
        "bad_lines": summary["bad_lines"]["total"],
        "bad_share": summary["bad_lines"]["share"],
        "warnings": result.warnings,
        "seconds": time.perf_counter() - t0,
    }


def _size(job: Job) -> int:
    total = 0
    for p in job.inputs:
        with contextlib.suppress(OSError):  # a missing input: the task reports it
            total += Path(p).stat().st_size
    return total


def run_all(
    fmt: str,
    jobs: list[Job],
    opts: ConvertOptions,
    allow_bad_lines: bool,
    client: Any,
    on_result: Callable[[dict[str, Any]], None],
    allow_book_loss: bool = False,
) -> list[dict[str, Any]]:
    """Submit the jobs that are not done yet to ``client``; report each result as it comes."""
    from dask.distributed import as_completed

    out: list[dict[str, Any]] = []
    todo = []
    for job in jobs:
        if is_done(job):
            res = {**asdict(job), "ok": True, "skipped": "already converted"}
            out.append(res)
            on_result(res)
        else:
            todo.append(job)
    # Largest input first: the long days start first instead of ending the run on one worker.
    todo.sort(key=_size, reverse=True)
    opt_dict = {k: v for k, v in asdict(opts).items()}
    futures = [
        client.submit(
            run_job,
            fmt,
            asdict(job),
            opt_dict,
            allow_bad_lines,
            allow_book_loss,
            key=f"convert-{job.key}-{time.time_ns()}",
            pure=False,
        )
        for job in todo
    ]
    by_key = {f.key: job for f, job in zip(futures, todo, strict=True)}
    for fut in as_completed(futures):
        try:
            res = fut.result()
        except Exception as exc:  # a crash in the converter: name the file, go on with the rest
            job = by_key[fut.key]
            res = {**asdict(job), "ok": False, "error": f"internal error: {exc!r}"}
        out.append(res)
        on_result(res)
    return out
