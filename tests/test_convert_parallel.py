"""`convert --workers N`: many files on a real Dask LocalCluster (loopback), one feed each,
published atomically, the same bytes as one-by-one conversions, and resumable."""

from __future__ import annotations

import json
from pathlib import Path

from cli_harness import cli

from mm_sim.feeds.convert.base import ConvertOptions
from mm_sim.feeds.convert.parallel import plan
from mm_sim.feeds.convert.publish import publish

REPO = Path(__file__).resolve().parent.parent
BOOK = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"
TRADES = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"


def day_files(folder: Path, day: str, sym: str, t0: int, rows: int = 60) -> list[Path]:
    """tardis.dev files of one day and symbol, named as tardis names its downloads."""
    book = [
        BOOK,
        f"deribit,{sym},{t0},{t0},true,bid,100.0,5",
        f"deribit,{sym},{t0},{t0},true,ask,100.5,5",
    ]
    trades = [TRADES]
    for i in range(1, rows):
        t = t0 + 1000 * i
        book.append(f"deribit,{sym},{t},{t + 5},false,bid,{100.0 - 0.5 * (i % 3):.1f},{i % 4}")
        if i % 5 == 0:
            trades.append(f"deribit,{sym},{t},{t + 5},{i},sell,100.0,1")
    paths = []
    for kind, lines in (("incremental_book_L2", book), ("trades", trades)):
        p = folder / f"deribit_{kind}_{day}_{sym}.csv"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    return paths


def test_days_and_symbols_convert_in_parallel_as_they_do_one_by_one(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    inputs: list[Path] = []
    t0 = 1_700_000_000_000_000
    for d, day in enumerate(("2024-01-01", "2024-01-02")):
        for sym in ("BTC-PERPETUAL", "ETH-PERPETUAL"):
            inputs += day_files(src, day, sym, t0 + d * 86_400_000_000)
    broken = src / "deribit_incremental_book_L2_2024-01-03_BTC-PERPETUAL.csv"
    broken.write_text(BOOK + "\n")  # a header and no book: that task fails, the others not
    jobs = plan("tardis", [*inputs, broken], tmp_path / "out", ConvertOptions())
    assert sorted(j.key for j in jobs) == [
        "deribit_2024-01-01_BTC-PERPETUAL",
        "deribit_2024-01-01_ETH-PERPETUAL",
        "deribit_2024-01-02_BTC-PERPETUAL",
        "deribit_2024-01-02_ETH-PERPETUAL",
        "deribit_2024-01-03_BTC-PERPETUAL",
    ]
    assert all(len(j.inputs) == 2 for j in jobs[:4])

    out = tmp_path / "out"
    args = ["convert", "--from", "tardis", *map(str, inputs), str(broken), "-o", str(out)]
    proc = cli(*args, "--workers", "2", "--tick", "0.5", "--json")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert "LocalCluster, 2 worker" in report["engine"]
    by_key = {r["key"]: r for r in report["files"]}
    failed = by_key.pop("deribit_2024-01-03_BTC-PERPETUAL")
    assert not failed["ok"] and "no events" in failed["error"]
    assert f"{broken}" in proc.stderr
    assert all(r["ok"] and r["events"] > 0 for r in by_key.values())
    # Nothing half written: only the four feeds and their sidecars.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{k}{ext}" for k in by_key for ext in (".npy", ".json")
    )
    # The same bytes as a one-by-one conversion of each day and symbol.
    for job in jobs[:4]:
        one = tmp_path / f"one-{job.key}.npy"
        publish("tardis", [Path(p) for p in job.inputs], one, ConvertOptions(tick_size=0.5))
        assert Path(job.target).read_bytes() == one.read_bytes()

    # A rerun skips what is complete; a half-published output (no sidecar) is done again.
    half = Path(jobs[0].target)
    half.with_suffix(".json").unlink()
    again = ["convert", "--from", "tardis", *map(str, inputs), "-o", str(out), "--tick", "0.5"]
    proc = cli(*again, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("skipped ") == 3 and proc.stdout.count("wrote ") == 1
    assert "(3 already done, 0 failed)" in proc.stdout
    assert half.with_suffix(".json").exists()


def test_parallel_needs_a_directory_and_one_engine(tmp_path: Path) -> None:
    src = day_files(tmp_path, "2024-01-01", "BTC-PERPETUAL", 1_700_000_000_000_000)
    proc = cli(
        "convert",
        "--from",
        "tardis",
        *map(str, src),
        "-o",
        str(tmp_path / "x.npy"),
        "--workers",
        "1",
    )
    assert proc.returncode == 2 and "OUT is a directory of feeds" in proc.stderr
    proc = cli(
        "convert",
        "--from",
        "tardis",
        *map(str, src),
        "-o",
        str(tmp_path / "d"),
        "--workers",
        "1",
        "--scheduler",
        "127.0.0.1:1",
    )
    assert proc.returncode == 2 and "give one" in proc.stderr


def test_an_existing_cluster_by_address(tmp_path: Path) -> None:
    """--scheduler: the cluster of someone else (here a LocalCluster of this process)."""
    import logging

    from dask.distributed import LocalCluster

    src = tmp_path / "src"
    src.mkdir()
    inputs = [
        *day_files(src, "2024-01-01", "BTC-PERPETUAL", 1_700_000_000_000_000),
        *day_files(src, "2024-01-02", "BTC-PERPETUAL", 1_700_086_400_000_000),
    ]
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster:
        out = tmp_path / "out"
        proc = cli(
            "convert", "--from", "tardis", *map(str, inputs), "-o", str(out),
            "--scheduler", cluster.scheduler_address, "--tick", "0.5",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"Dask cluster at {cluster.scheduler_address}" in proc.stdout
    assert "converted 2 of 2 file(s)" in proc.stdout
    assert sorted(p.name for p in out.glob("*.npy")) == [
        "deribit_2024-01-01_BTC-PERPETUAL.npy",
        "deribit_2024-01-02_BTC-PERPETUAL.npy",
    ]


def test_binance_csv_files_group_by_symbol_and_day(tmp_path: Path) -> None:
    names = [
        "BTCUSDT_T_DEPTH_2020-07-02_depth_snap.csv",
        "BTCUSDT_T_DEPTH_2020-07-02_depth_update.csv",
        "BTCUSDT-trades-2020-07-02.csv",
        "BTCUSDT_T_DEPTH_2020-07-03_depth_snap.csv",
        "ETHUSDT-aggTrades-2020-07-02.csv",
    ]
    jobs = plan("binance-csv", [tmp_path / n for n in names], tmp_path, ConvertOptions())
    got = {j.key: sorted(Path(p).name for p in j.inputs) for j in jobs}
    assert got == {
        "BTCUSDT_2020-07-02": sorted(names[:3]),
        "BTCUSDT_2020-07-03": [names[3]],
        "ETHUSDT_2020-07-02": [names[4]],
    }
