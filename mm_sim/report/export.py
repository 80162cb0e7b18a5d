"""Write a run's tables (``mm_sim.report.frames``) as Parquet or CSV files a user owns.

Each table becomes one file, written atomically, and ``export.json`` beside them names the
schema version, the run, every table's file, row count and column types: a CSV carries no
types and a reader of the directory months later must still know what it holds. Parquet files
also carry the schema version in their own key-value metadata (key ``mm_sim``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from mm_sim.errors import UserError
from mm_sim.events import atomic_write_bytes, atomic_write_json
from mm_sim.report.frames import TABLES, RunFrames

FORMATS = ("parquet", "csv")
MANIFEST = "export.json"


def _parquet_bytes(frame: Any, meta: dict[str, Any]) -> bytes:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        raise UserError("--format parquet needs pyarrow: pip install 'pyarrow>=14' "
                        "(or use --format csv)") from None  # fmt: skip
    table = pa.Table.from_pandas(frame, preserve_index=False)
    extra = {b"mm_sim": json.dumps(meta).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _csv_bytes(frame: Any) -> bytes:
    # Timestamps as ISO 8601 with their +00:00; floats with Python's shortest round-trip repr.
    return str(frame.to_csv(index=False, lineterminator="\n")).encode()


def check_out(out: Path) -> None:
    """Whether ``out`` may take an export: a new or empty directory, or an earlier export (its
    ``export.json``), which is replaced. Anything else holds files that are not ours to
    overwrite: ``--out RUN/soak`` replaced the run's own fills.csv with the export's wider
    table, and ``--out /`` wrote into the root directory."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory (choose another --out)")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UserError(
            f"--out {out}: directory is not empty and holds no earlier export ({MANIFEST}); "
            "choose a new or empty directory (default: RUN_DIR/export)"
        )


def export_run(run: RunFrames, out: Path, fmt: str) -> dict[str, Any]:
    """Write every table of ``run`` to ``out`` in ``fmt``; returns the manifest written."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    check_out(out)
    tables: dict[str, Any] = {}
    for name in TABLES:
        frame = run.table(name)
        file = f"{name}.{fmt}"
        meta = {"schema_version": run.schema_version, "table": name}
        data = _parquet_bytes(frame, meta) if fmt == "parquet" else _csv_bytes(frame)
        atomic_write_bytes(out / file, data)
        tables[name] = {
            "file": file,
            "rows": len(frame),
            "columns": {str(c): str(t) for c, t in frame.dtypes.items()},
        }
    manifest = {
        "schema_version": run.schema_version,
        "kind": "run_export",
        "run": str(run.root.resolve()),
        "format": fmt,
        "tables": tables,
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest
