"""A run directory as pandas DataFrames: the public reading API behind ``mm_sim.read_run``.

The records stay headerless binary (fast, exact, appended by the runner); this module is the
one place that turns them into flat, typed, labelled tables so an analyst never decodes a
dtype or parses metrics.jsonl by hand. Only committed iterations are read (the same cut the
reports and fills.csv use), each row carries the iteration it belongs to, and every timestamp
comes twice: the exact integer nanoseconds (``*ts_ns``) and a UTC ``datetime64`` beside it.
Field meanings and units: docs/REPORTS.md, "Reading a run in Python".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mm_sim.core.records import ACTION_NAMES, BLOCK_REASONS, LIQ_MAKER
from mm_sim.errors import UserError
from mm_sim.report.rundir import RECORD_DTYPES, RunDir
from mm_sim.report.schema import SCHEMA_VERSION, IterationLine, dump

if TYPE_CHECKING:
    import pandas as pd

TABLES = ("fills", "marks", "actions", "blocks", "iterations", "decisions")


@dataclass(frozen=True)
class RunFrames:
    """One run's data. ``config`` is run.json as written; the tables are documented in
    docs/REPORTS.md."""

    root: Path
    schema_version: int
    config: dict[str, Any]
    fills: pd.DataFrame
    marks: pd.DataFrame
    actions: pd.DataFrame
    blocks: pd.DataFrame
    iterations: pd.DataFrame
    decisions: pd.DataFrame

    def table(self, name: str) -> pd.DataFrame:
        frame: pd.DataFrame = getattr(self, name)
        return frame


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        raise UserError(
            "reading a run as DataFrames needs pandas: pip install 'pandas>=2.1'"
        ) from None
    return pandas


def utc(ts_ns: Any) -> Any:
    """Integer ns since the epoch as UTC datetimes (missing values stay missing)."""
    pd = _pandas()
    return pd.to_datetime(pd.Series(ts_ns, dtype="Int64"), unit="ns", utc=True).array


def _side(codes: np.ndarray) -> np.ndarray:
    return np.where(codes > 0, "buy", "sell").astype(object)


def _with_time(pd: Any, columns: dict[str, Any], ts: np.ndarray, iteration: np.ndarray) -> Any:
    out = {"ts_ns": ts.astype(np.int64), "time": utc(ts), "iteration": iteration}
    return pd.DataFrame({**out, **columns})


def _iteration_of(lines: Sequence[IterationLine], name: str) -> np.ndarray:
    """The committed iteration each record of ``name`` belongs to (from the lines' offsets)."""
    size = RECORD_DTYPES[name].itemsize
    counts, prev = [], 0
    for line in lines:
        counts.append(line.offsets[name] // size - prev)
        prev = line.offsets[name] // size
    return np.repeat(np.array([ln.iteration for ln in lines], dtype=np.int64), counts)


def fills_frame(pd: Any, f: np.ndarray, iteration: np.ndarray) -> Any:
    return _with_time(
        pd,
        {
            "order_id": f["order_id"],
            "side": _side(f["side"]),
            "price": f["price"],
            "qty": f["qty"],
            "fee": f["fee"],
            "liquidity": np.where(f["liquidity"] == LIQ_MAKER, "maker", "taker").astype(object),
            "quote_price": f["quote_price"],
            "mid_decision": f["mid_decision"],
            "mid_fill": f["mid_fill"],
            "order_age_ms": f["order_age_ns"] / 1e6,
            "queue_ms": f["queue_ns"] / 1e6,
            "position_after": f["position_after"],
        },
        f["ts"],
        iteration,
    )


def marks_frame(pd: Any, m: np.ndarray, iteration: np.ndarray) -> Any:
    names = ("mid", "position", "cash", "bid_quote", "ask_quote", "best_bid", "best_ask", "sigma")
    return _with_time(pd, {n: m[n] for n in names}, m["ts"], iteration)


def actions_frame(pd: Any, a: np.ndarray, iteration: np.ndarray) -> Any:
    names = np.array([ACTION_NAMES.get(int(c), f"unknown_{int(c)}") for c in a["action"]])
    return _with_time(
        pd,
        {
            "order_id": a["order_id"],
            "action": names.astype(object),
            "side": _side(a["side"]),
            "price": a["price"],
            "qty": a["qty"],
        },
        a["ts"],
        iteration,
    )


def blocks_frame(pd: Any, b: np.ndarray, iteration: np.ndarray) -> Any:
    def reason(c: int) -> str:
        return BLOCK_REASONS[c] if 0 <= c < len(BLOCK_REASONS) else f"unknown_{c}"

    return _with_time(
        pd,
        {
            "reason": np.array([reason(int(c)) for c in b["reason"]], dtype=object),
            "action": np.array(
                [ACTION_NAMES.get(int(c), f"unknown_{int(c)}") for c in b["action"]], dtype=object
            ),
            "side": _side(b["side"]),
        },
        b["ts"],
        iteration,
    )


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested JSON as flat ``a.b.c`` columns; lists of scalars joined with commas, lists of
    objects left out (the per-cycle venue rules and the drivers have their own reports)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            if all(not isinstance(v, Mapping | list) for v in value):
                out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = value
    return out


def iteration_row(line: IterationLine) -> dict[str, Any]:
    """One metrics.jsonl line as one flat row: the gate's verdict first, then the edge
    section's figures under their report names, then overrides, offsets and ``extra``."""
    data = dump(line)
    gate, edge = data["gate"], data["edge"]
    row: dict[str, Any] = {
        "iteration": line.iteration,
        "partial": line.partial,
        "verdict": gate["verdict"],
        "band": gate["band"],
        "hard_failed": ",".join(gate["hard_failed"]),
        "soft_failed": ",".join(gate["soft_failed"]),
        "ts_start_ns": edge["ts_start_ns"],
        "ts_end_ns": edge["ts_end_ns"],
    }
    edge = {k: v for k, v in edge.items() if k not in ("iteration", "ts_start_ns", "ts_end_ns")}
    row.update(flatten(edge))
    row["decisions"] = len(line.decisions)
    for key in ("overrides", "overrides_next", "offsets", "extra"):
        row.update(flatten(data[key], f"{key}."))
    return row


def iterations_frame(pd: Any, lines: Sequence[IterationLine]) -> Any:
    frame = pd.DataFrame([iteration_row(ln) for ln in lines])
    if frame.empty:
        frame = pd.DataFrame({"iteration": pd.Series(dtype="int64")})
        return frame
    for col in ("ts_start", "ts_end"):
        frame.insert(frame.columns.get_loc(f"{col}_ns") + 1, col.replace("ts_", "time_"),
                     utc(frame[f"{col}_ns"]))  # fmt: skip
    return frame


def decisions_frame(pd: Any, lines: Sequence[IterationLine]) -> Any:
    rows = [dump(d) for ln in lines for d in ln.decisions]
    cols = ("iteration", "sim_ts", "driver", "field", "old", "new", "reason")
    frame = pd.DataFrame(rows, columns=list(cols))
    frame = frame.rename(columns={"sim_ts": "ts_ns"})
    frame["ts_ns"] = frame["ts_ns"].astype("Int64")  # missing for a decision at a boundary
    frame["time"] = utc(frame["ts_ns"])
    order = ["ts_ns", "time", "iteration", "driver", "field", "old", "new", "reason"]
    return frame[order].astype({"iteration": "int64", "old": "float64", "new": "float64"})


def read_run(root: str | Path) -> RunFrames:
    """Every committed record and metrics line of the run in ``root`` as DataFrames."""
    pd = _pandas()
    rd = RunDir(root)
    config = dump(rd.load_config())
    lines = rd.committed_lines()
    recs = {name: rd.read_records(name, 0, lines[-1].offsets[name] if lines else 0)
            for name in RECORD_DTYPES}  # fmt: skip
    its = {name: _iteration_of(lines, name) for name in RECORD_DTYPES}
    return RunFrames(
        root=Path(root),
        schema_version=SCHEMA_VERSION,
        config=config,
        fills=fills_frame(pd, recs["fills"], its["fills"]),
        marks=marks_frame(pd, recs["marks"], its["marks"]),
        actions=actions_frame(pd, recs["actions"], its["actions"]),
        blocks=blocks_frame(pd, recs["blocks"], its["blocks"]),
        iterations=iterations_frame(pd, lines),
        decisions=decisions_frame(pd, lines),
    )
