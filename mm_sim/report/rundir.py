"""The run directory: durable, append-only storage every report is rebuilt from.

Layout::

    ROOT/soak/run.json               how the run was started (settings, profile, overrides, feed)
    ROOT/soak/records/{fills,actions,blocks,marks}.bin
                                     raw numpy records (FILL_DTYPE ...), appended, never rewritten
    ROOT/soak/metrics.jsonl          one line per committed iteration (offsets into the records)
    ROOT/soak/runtime_overrides.json the overrides the next iteration starts with
    ROOT/soak/summary.txt            free-form iteration log
    ROOT/soak/fills.csv              every committed fill, rebuilt by the reports
    ROOT/reports/...                 EDGE_REPORT.json, KPI_GATE.json, soak_metrics.json, ...

Commit protocol: an iteration's records are appended (any number of times), then fsynced, then
its metrics line — which carries the byte size of every records file at that moment — is
appended and fsynced. The line is the commit: bytes past the last line's offsets, or a last
line without its newline, belong to an iteration that never committed, and ``begin(resume=True)``
cuts them off. A crash anywhere therefore loses at most the iteration in progress and never
duplicates one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mm_sim import durable
from mm_sim.config import Overrides
from mm_sim.core.records import LIQ_MAKER
from mm_sim.errors import UserError
from mm_sim.events import (
    RECORDS_HASH,
    atomic_write_bytes,
    atomic_write_json,
    clean_stale_temp_files,
    data_digest,
    hold_lock,
    read_text_file,
    try_lock,
)
from mm_sim.report.runconfig import RECORD_DTYPES, record_layout, resume_conflicts, stored_layout
from mm_sim.report.schema import (
    DecisionRecord,
    EdgeSection,
    GateResult,
    IterationLine,
    LineExtra,
    RunConfig,
    dump,
    validate_written,
)

FILLS_CSV_HEADER = (
    "ts_ns",
    "iteration",
    "side",
    "price",
    "qty",
    "fee",
    "liquidity",
    "quote_price",
    "mid_decision",
    "mid_fill",
    "order_age_ms",
)

# What a previous run directory may hold at its top level (anything else is the user's folder).
RUN_DIR_ENTRIES = frozenset({"soak", "reports", "control"})


def is_run_dir(root: Path) -> bool:
    """True for a directory an mm_sim run wrote (so it may be moved aside by a fresh run)."""
    if not root.is_dir():
        return False
    names = {p.name for p in root.iterdir()}
    return (root / "soak" / "run.json").is_file() or (bool(names) and names <= RUN_DIR_ENTRIES)


@dataclass(frozen=True)
class PendingIteration:
    """An iteration evaluated but not yet committed: its report and the record bytes it covers."""

    iteration: int
    edge: EdgeSection
    gate: GateResult
    offsets: dict[str, int]
    ws_lag_p95_ms: float | None


def _decision_json(d: Any) -> dict[str, Any]:
    if isinstance(d, Mapping):
        return dict(d)
    if hasattr(d, "to_json"):
        return dict(d.to_json())
    if is_dataclass(d) and not isinstance(d, type):
        return asdict(d)
    raise TypeError(f"a tuner decision must be a mapping or a dataclass, got {type(d).__name__}")


def overrides_after(
    overrides: Mapping[str, float], decisions: Sequence[DecisionRecord]
) -> dict[str, float]:
    """Apply decisions in order (later ones win) to the overrides in force."""
    out = {k: float(v) for k, v in overrides.items()}
    for d in decisions:
        if d.field is not None and d.new is not None:
            out[d.field] = float(d.new)
    return out


# Bytes of records held in memory per file between writes: a soak appends a few dozen records
# per engine and chunk, and with the default 8 kB buffer the write calls were 6 % of a default
# soak. Nothing appended is durable before the iteration's commit flushes and fsyncs anyway.
APPEND_BUFFER = 1 << 18


class RunDir:
    """One run's directory. Read-only use needs no set-up; writing starts with ``begin``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.soak = self.root / "soak"
        self.reports = self.root / "reports"
        self.records_dir = self.soak / "records"
        self.run_json = self.soak / "run.json"
        self.metrics_jsonl = self.soak / "metrics.jsonl"
        self.summary_txt = self.soak / "summary.txt"
        self.overrides_json = self.soak / "runtime_overrides.json"
        self.fills_csv = self.soak / "fills.csv"
        self._files: dict[str, IO[bytes]] = {}
        self._lock: IO[bytes] | None = None
        self._lines: list[IterationLine] | None = None
        self._drop_partial = False
        self.last_overrides_text: str | None = None

    @contextlib.contextmanager
    def not_running(self) -> Iterator[None]:
        """Hold the run's lock while its records are read (report, export): a soak still
        writing them would be read mid-iteration and its reports rewritten from a part. The
        lock file is opened to read only: a run directory one may only read can be exported."""
        path = self.soak / ".lock"
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:  # no process ever wrote here
            yield
            return
        with fh:
            if not try_lock(fh):
                raise UserError(
                    f"{self.root}: a soak is still running in this directory (it holds {path}); "
                    "run this once it has ended (it writes its own reports then)"
                )
            yield

    def record_path(self, name: str) -> Path:
        return self.records_dir / f"{name}.bin"

    # -- starting / resuming ------------------------------------------------------------------

    def is_empty(self) -> bool:
        return not self.root.exists() or not any(self.root.iterdir())

    def check_fresh(self) -> None:
        """Refuse to start a new run on top of anything already in the directory (the lock
        file this process holds aside)."""
        held = self.soak / ".lock"
        if self._lock is not None and self.root.is_dir():
            others = [p for p in self.root.iterdir() if p != self.soak]
            if not others and (not self.soak.is_dir() or set(self.soak.iterdir()) <= {held}):
                return
        if not self.is_empty():
            what = "an existing run" if self.run_json.exists() else "other files"
            raise UserError(
                f"{self.root}: directory is not empty (it holds {what}); "
                "pass --resume to continue that run, or choose a new directory"
            )

    def begin(
        self, config: RunConfig, resume: bool = False, drop_partial: bool = False
    ) -> list[IterationLine]:
        """Open the directory for writing; returns the iterations already committed.

        Fresh (``resume=False``): the directory must be empty or absent. Resume: the directory
        must hold a run started with the same profile, initial overrides, feed and seed; records
        and lines of the iteration that was in progress are discarded. Resuming an empty or
        absent directory starts it fresh. ``drop_partial``: a last line flagged partial (an
        interrupted iteration) is uncommitted too, so the iteration is run again in full.
        """
        self._drop_partial = drop_partial
        try:
            resuming = resume and not self.is_empty()
            lines = self._resume(config) if resuming else self._start(config)
            self._files = {
                name: open(self.record_path(name), "ab", buffering=APPEND_BUFFER)  # noqa: SIM115
                for name in RECORD_DTYPES
            }
        except BaseException:
            self.close()
            raise
        self._lines = list(lines)
        return list(lines)

    def _start(self, config: RunConfig) -> list[IterationLine]:
        # The lock first: a second process starting on the same directory stops here, before
        # it looks at (or writes) anything.
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root}: not a directory (choose another --out)")
        if self.root.is_dir() and any(p.name != "soak" for p in self.root.iterdir()):
            self.check_fresh()  # the user's own files: refused before anything is created
        self._acquire_lock()
        self.check_fresh()
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.reports.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_json, dump(config))
        for name in RECORD_DTYPES:
            self.record_path(name).touch()
        self.metrics_jsonl.touch()
        self.write_overrides(config.initial_overrides)
        durable.fsync_dir(self.records_dir)
        durable.fsync_dir(self.soak)
        return []

    def _resume(self, config: RunConfig) -> list[IterationLine]:
        if not self.run_json.exists():
            raise UserError(f"{self.root}: cannot resume, {self.run_json} not found")
        self._acquire_lock()
        stored = self.load_config()
        diff = resume_conflicts(stored, config)
        if diff:
            raise UserError(
                f"{self.run_json}: cannot resume with a different {'; '.join(diff)} "
                "(resume with the run's own settings, or start a new run directory)"
            )
        self._remove_unfinished_writes()
        if self._drop_partial:
            self._drop_trailing_partial()
        return self._recover()

    def _remove_unfinished_writes(self) -> None:
        """The hidden ``.NAME.*.tmp`` files of atomic writes a killed run never renamed: with the
        lock held nobody else writes here, so they are leftovers, and a resumed run must end
        with the files an uninterrupted one has. (Model arms are run directories of their own
        under ``models/``, cleaned when they resume.)"""
        subdirs = [d for d in self.soak.rglob("*") if d.is_dir()]
        for d in (self.root, self.soak, *subdirs, self.reports):
            clean_stale_temp_files(d, "*")

    def _drop_trailing_partial(self) -> None:
        """A partial (interrupted) last iteration is re-run in full on resume: uncommit it."""
        lines, end = self._read_lines()
        if not lines or not lines[-1].partial:
            return
        raw = self.metrics_jsonl.read_bytes()[:end]
        keep = raw[: raw.rstrip(b"\n").rfind(b"\n") + 1]
        atomic_write_bytes(self.metrics_jsonl, keep)

    def _acquire_lock(self) -> None:
        self.soak.mkdir(parents=True, exist_ok=True)
        self._lock = hold_lock(
            self.soak / ".lock",
            f"{self.root}: another mm_sim process is writing to this run directory",
        )

    def _recover(self) -> list[IterationLine]:
        """Cut the directory back to its last committed iteration (see the module docstring)."""
        lines, good_bytes = self._read_lines()
        self.metrics_jsonl.touch()
        self.records_dir.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_jsonl, "r+b") as fh:
            fh.truncate(good_bytes)
            fh.flush()
            durable.fsync(fh.fileno())
        ends = lines[-1].offsets if lines else dict.fromkeys(RECORD_DTYPES, 0)
        for name in RECORD_DTYPES:
            path = self.record_path(name)
            size = path.stat().st_size if path.exists() else 0
            if size < ends[name]:
                raise UserError(
                    f"{path}: {size} bytes, shorter than the {ends[name]} committed by iteration "
                    f"{lines[-1].iteration} in {self.metrics_jsonl}: the run directory is damaged"
                )
            with open(path, "r+b" if path.exists() else "wb") as fh:
                fh.truncate(ends[name])
                fh.flush()
                durable.fsync(fh.fileno())
        if lines:
            self.write_overrides(lines[-1].overrides_next)
        return lines

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------

    def append(
        self,
        fills: np.ndarray | None = None,
        actions: np.ndarray | None = None,
        blocks: np.ndarray | None = None,
        marks: np.ndarray | None = None,
    ) -> None:
        """Append raw records of the iteration in progress (cheap: no fsync until commit)."""
        if not self._files:
            raise RuntimeError("RunDir.append before begin()")
        for name, arr in (
            ("fills", fills),
            ("actions", actions),
            ("blocks", blocks),
            ("marks", marks),
        ):
            if arr is None or len(arr) == 0:
                continue
            if arr.dtype != RECORD_DTYPES[name]:
                raise TypeError(f"{name}: expected dtype {RECORD_DTYPES[name]}, got {arr.dtype}")
            # (bytes: a memoryview of a structured array costs 1 us to describe its fields)
            self._files[name].write(arr.tobytes())

    def sizes(self) -> dict[str, int]:
        """Current byte size of every records file (pending bytes included)."""
        for fh in self._files.values():
            fh.flush()
        return {name: self.record_path(name).stat().st_size for name in RECORD_DTYPES}

    def commit_iteration(
        self,
        pending: PendingIteration,
        *,
        overrides: Overrides | Mapping[str, float],
        decisions: Sequence[Any] = (),
        overrides_next: Overrides | Mapping[str, float] | None = None,
        extra: Mapping[str, Any] | None = None,
        partial: bool = False,
    ) -> IterationLine:
        """Make an evaluated iteration durable (records fsynced, then its metrics line).

        ``overrides``: the six overrides in force at the iteration's end; ``decisions``: the
        tuner decisions taken during it and right after it (``Decision`` objects or dicts);
        ``overrides_next``: what the next iteration starts with (default: ``overrides`` with
        the decisions applied) — written to runtime_overrides.json and used on resume;
        ``partial``: the iteration was cut short (e.g. by an interrupt).
        """
        if not self._files:
            raise RuntimeError("RunDir.commit_iteration before begin()")
        for fh in self._files.values():
            fh.flush()
            durable.fsync(fh.fileno())
        sizes = self.sizes()
        if sizes != pending.offsets:
            raise RuntimeError(
                f"records changed after iteration {pending.iteration} was evaluated "
                f"({pending.offsets} -> {sizes}); evaluate again before committing"
            )
        lines = self.committed_lines()
        start = lines[-1].offsets if lines else dict.fromkeys(RECORD_DTYPES, 0)
        digests = {
            name: self._range_digest(name, start[name], pending.offsets[name])
            for name in RECORD_DTYPES
        }
        ovr = overrides.as_dict() if isinstance(overrides, Overrides) else dict(overrides)
        recs = [DecisionRecord.model_validate(_decision_json(d)) for d in decisions]
        if overrides_next is None:
            nxt = overrides_after(ovr, recs)
        elif isinstance(overrides_next, Overrides):
            nxt = overrides_next.as_dict()
        else:
            nxt = {k: float(v) for k, v in overrides_next.items()}
        line = IterationLine(
            iteration=pending.iteration,
            partial=partial,
            edge=pending.edge,
            gate=pending.gate,
            overrides={k: float(v) for k, v in ovr.items()},
            overrides_next=nxt,
            offsets=dict(pending.offsets),
            ws_lag_p95_ms=pending.ws_lag_p95_ms,
            decisions=recs,
            extra=json.loads(json.dumps(dict(extra or {}), default=str)),
            digests=digests,
        )
        data = (json.dumps(dump(line), separators=(",", ":")) + "\n").encode()
        with open(self.metrics_jsonl, "ab") as fh:
            fh.write(data)
            fh.flush()
            durable.fsync(fh.fileno())
        if self._lines is not None:
            self._lines.append(line)
        self.write_overrides(nxt)
        return line

    def write_overrides(self, overrides: Overrides | Mapping[str, float]) -> str:
        """Rewrite runtime_overrides.json atomically; returns the text written.

        The text is also kept in ``last_overrides_text`` so a watcher of the file (operator
        hot-swap) can tell this process's own writes from an operator's edit.
        """
        ovr = overrides.as_dict() if isinstance(overrides, Overrides) else dict(overrides)
        text = json.dumps({k: float(v) for k, v in ovr.items()}, indent=2) + "\n"
        atomic_write_bytes(self.overrides_json, text.encode())
        self.last_overrides_text = text
        return text

    def append_summary(self, *lines: str) -> None:
        """Append lines to summary.txt (a human log; not part of the commit protocol, but
        fsynced like every append-only log here: a line the soak printed survives a crash)."""
        self.soak.mkdir(parents=True, exist_ok=True)
        with open(self.summary_txt, "a", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line.rstrip("\n") + "\n")
            fh.flush()
            durable.fsync(fh.fileno())

    # -- reading --------------------------------------------------------------------------------

    def load_config(self) -> RunConfig:
        if not self.run_json.exists():
            raise UserError(f"{self.root}: not a run directory ({self.run_json} not found)")
        try:
            data = json.loads(read_text_file(self.run_json, "run configuration (JSON)"))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{self.run_json}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
            ) from None
        cfg = validate_written(RunConfig, data, str(self.run_json))
        for name, dt in RECORD_DTYPES.items():
            if stored_layout(cfg.records.get(name)) != record_layout(dt):
                raise UserError(
                    f"{self.run_json}: records '{name}' were written with layout "
                    f"{cfg.records.get(name)}, this mm_sim uses {record_layout(dt)}"
                )
        return cfg

    def _read_lines(self) -> tuple[list[IterationLine], int]:
        """Committed lines and the byte length they span (a trailing partial line is ignored)."""
        if not self.metrics_jsonl.exists():
            return [], 0
        if self.metrics_jsonl.is_dir():
            raise UserError(f"{self.metrics_jsonl}: is a directory, expected the metrics file")
        try:
            raw = self.metrics_jsonl.read_bytes()
        except OSError as exc:
            raise UserError(f"{self.metrics_jsonl}: cannot read: {exc.strerror}") from None
        end = raw.rfind(b"\n") + 1
        lines: list[IterationLine] = []
        prev = dict.fromkeys(RECORD_DTYPES, 0)
        for n, text in enumerate(raw[:end].splitlines(), 1):
            where = f"{self.metrics_jsonl}:{n}"
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: invalid JSON: {exc.msg}") from None
            except ValueError:
                raise UserError(f"{where}: not UTF-8 text, expected one JSON object") from None
            line = validate_written(IterationLine, data, where)
            validate_written(LineExtra, line.extra, where, at=("extra",))
            if line.iteration != n - 1:
                raise UserError(
                    f"{where}: iteration {line.iteration} where iteration {n - 1} was expected "
                    "(a line repeated, missing or out of order: the file was edited or pasted "
                    "together, not written by a run)"
                )
            for name, dt in RECORD_DTYPES.items():
                off = line.offsets.get(name)
                if off is None or off < prev[name] or off % dt.itemsize:
                    raise UserError(
                        f"{where}: field 'offsets.{name}' = {off!r}: expected a multiple of "
                        f"{dt.itemsize} not below the previous line's {prev[name]}"
                    )
            if line.digests:
                self._check_digests(line, prev, where)
            prev = line.offsets
            lines.append(line)
        return lines, end

    def _range_digest(self, name: str, start: int, stop: int) -> str:
        """XXH3-64 (hex) of records file ``name``'s bytes ``[start, stop)``."""
        return data_digest(self.record_path(name), start, RECORDS_HASH, stop)[1]

    def _check_digests(self, line: IterationLine, start: Mapping[str, int], where: str) -> None:
        """The iteration's records are the bytes the run committed (a file overwritten or
        edited since would otherwise give a report figures computed from garbage)."""
        for name in RECORD_DTYPES:
            want = line.digests.get(name)
            if want is None:
                continue
            path = self.record_path(name)
            a, b = start[name], line.offsets[name]
            if not path.is_file():
                raise UserError(
                    f"{path}: records file not found (a sweep's runs keep their records only "
                    "with --keep-records)"
                )
            size = path.stat().st_size
            if size < b:
                raise UserError(
                    f"{path}: {size} bytes, shorter than the {b} committed by iteration "
                    f"{line.iteration} in {where}: the run directory is damaged"
                )
            if self._range_digest(name, a, b) != want:
                raise UserError(
                    f"{path}: bytes {a}-{b} (iteration {line.iteration}) are not the records "
                    f"the run committed ({where}, field 'digests.{name}'): the file was changed "
                    "after the run wrote it"
                )

    def committed_lines(self) -> list[IterationLine]:
        """The committed iterations (cached while this object is the writer)."""
        if self._lines is not None:
            return list(self._lines)
        return self._read_lines()[0]

    def read_records(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Records ``name`` between two byte offsets (``stop=None``: to the end of the file)."""
        dt = RECORD_DTYPES[name]
        path = self.record_path(name)
        if not path.exists():
            raise UserError(f"{path}: records file not found")
        if name in self._files:
            self._files[name].flush()
        size = path.stat().st_size
        stop = size if stop is None else stop
        if stop > size:
            raise UserError(f"{path}: {size} bytes, but {stop} are committed: the run is damaged")
        count = (stop - start) // dt.itemsize
        if count <= 0:
            return np.empty(0, dtype=dt)
        return np.fromfile(path, dtype=dt, count=count, offset=start)

    def iteration_records(
        self, lines: Sequence[IterationLine], names: Sequence[str] = tuple(RECORD_DTYPES)
    ) -> list[dict[str, np.ndarray]]:
        """Each committed iteration's records, split at the offsets its line recorded."""
        out: list[dict[str, np.ndarray]] = [{} for _ in lines]
        for name in names:
            dt = RECORD_DTYPES[name]
            stop = lines[-1].offsets[name] if lines else 0
            arr = self.read_records(name, 0, stop)
            prev = 0
            for i, line in enumerate(lines):
                hi = line.offsets[name] // dt.itemsize
                out[i][name] = arr[prev:hi]
                prev = hi
        return out

    def iter_committed_fills(
        self, lines: Sequence[IterationLine]
    ) -> Iterator[tuple[int, np.ndarray]]:
        for line, rec in zip(lines, self.iteration_records(lines, ("fills",)), strict=True):
            yield line.iteration, rec["fills"]

    # -- fills.csv --------------------------------------------------------------------------------

    def write_fills_csv(self, lines: Sequence[IterationLine] | None = None) -> int:
        """Rewrite soak/fills.csv (atomically) from the committed fill records; returns rows."""
        lines = self.committed_lines() if lines is None else lines
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(FILLS_CSV_HEADER)
        rows = 0
        for iteration, fills in self.iter_committed_fills(lines):
            for f in fills:
                w.writerow(
                    (
                        int(f["ts"]),
                        iteration,
                        "buy" if f["side"] > 0 else "sell",
                        repr(float(f["price"])),
                        repr(float(f["qty"])),
                        repr(float(f["fee"])),
                        "maker" if f["liquidity"] == LIQ_MAKER else "taker",
                        repr(float(f["quote_price"])),
                        repr(float(f["mid_decision"])),
                        repr(float(f["mid_fill"])),
                        repr(int(f["order_age_ns"]) / 1e6),
                    )
                )
                rows += 1
        atomic_write_bytes(self.fills_csv, buf.getvalue().encode())
        return rows
