"""What every `convert` shares, through the real command: the bad-line share limit, the inferred
tick warning and --tick, and the progress bars of `convert` and `inspect` on a terminal (a real
pseudo-terminal, so rich draws exactly what a user sees)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from cli_harness import ENV, cli

from mm_sim.commands.convert import failure_line
from mm_sim.errors import UserError
from mm_sim.events import hold_lock, open_feed
from mm_sim.feeds.convert.base import ConvertOptions
from mm_sim.feeds.convert.parallel import run_job
from mm_sim.feeds.convert.publish import publish

REPO = Path(__file__).resolve().parent.parent
HEADER = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"
T0 = 1_700_000_000_000_000


def book_file(path: Path, rows: int, bad: int, price_step: str = "0.5") -> Path:
    """A tardis book file: a 2-level snapshot, then ``rows`` updates of which ``bad`` have a
    non-numeric price. Prices step by ``price_step`` (written with one decimal)."""
    step = float(price_step)
    lines = [
        HEADER,
        f"deribit,BTC-PERPETUAL,{T0},{T0 + 1},true,bid,100.0,5",
        f"deribit,BTC-PERPETUAL,{T0},{T0 + 1},true,ask,101.5,5",
    ]
    for i in range(rows):
        t = T0 + 10 * (i + 1)
        price = "x" if i < bad else f"{100.0 - step * (i % 4):.1f}"
        lines.append(f"deribit,BTC-PERPETUAL,{t},{t + 1},false,bid,{price},{i % 7 + 1}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_more_than_one_percent_bad_lines_is_refused_unless_allowed(tmp_path: Path) -> None:
    src = book_file(tmp_path / "book.csv", rows=98, bad=2)  # 2 of 100 data lines
    out = tmp_path / "f.npy"
    proc = cli("convert", "--from", "tardis", str(src), "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "2 of 100 lines (2.00%) were bad and skipped, more than 1%" in proc.stderr
    assert f"{src}:4" in proc.stderr and "--allow-bad-lines" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".f.*"))

    proc = cli("convert", "--from", "tardis", str(src), "-o", str(out), "--allow-bad-lines")
    assert proc.returncode == 0, proc.stderr
    assert "(bad lines: 2 of 100 = 2.00%)" in proc.stdout.splitlines()[0]
    assert open_feed(out).meta.count > 0


def test_one_percent_or_less_passes_and_the_share_is_in_the_summary(tmp_path: Path) -> None:
    src = book_file(tmp_path / "book.csv", rows=198, bad=2)  # 2 of 200: exactly 1 %
    proc = cli("convert", "--from", "tardis", str(src), "-o", str(tmp_path / "f.npy"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["lines"] == 200
    assert summary["bad_lines"]["total"] == 2 and summary["bad_lines"]["share"] == 0.01


def test_an_inferred_tick_warns_and_tick_sets_it(tmp_path: Path) -> None:
    src = book_file(tmp_path / "book.csv", rows=20, bad=0)
    proc = cli("convert", "--from", "tardis", str(src), "-o", str(tmp_path / "a.npy"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "warning: the tick size 0.1 was inferred" in proc.stderr
    assert "--tick" in proc.stderr
    assert json.loads(proc.stdout)["warnings"][0].startswith("the tick size 0.1 was inferred")
    assert open_feed(tmp_path / "a.npy").instrument.tick_size == 0.1

    proc = cli(
        "convert", "--from", "tardis", str(src), "-o", str(tmp_path / "b.npy"), "--tick", "0.5"
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    assert open_feed(tmp_path / "b.npy").instrument.tick_size == 0.5


def _on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; (exit status, all it drew)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mm_sim", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        cwd=REPO,
        env={**ENV, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode("utf-8", "replace")


def test_convert_and_inspect_draw_a_bar_on_a_terminal_only(tmp_path: Path) -> None:
    src = book_file(tmp_path / "book.csv", rows=400, bad=0)
    out = tmp_path / "f.npy"
    rc, drawn = _on_a_terminal("convert", "--from", "tardis", str(src), "-o", str(out))
    assert rc == 0, drawn
    assert "convert f.npy" in drawn and "\x1b[" in drawn
    assert "wrote " in drawn

    plain = cli("convert", "--from", "tardis", str(src), "-o", str(tmp_path / "g.npy"))
    assert plain.returncode == 0 and "\x1b[" not in plain.stderr + plain.stdout
    assert "convert g.npy" not in plain.stderr

    rc, drawn = _on_a_terminal("inspect", str(out))
    assert rc == 0, drawn
    assert "inspect f.npy" in drawn and "events" in drawn
    plain = cli("inspect", str(out), "--json")
    assert plain.returncode == 0 and "inspect f.npy" not in plain.stderr
    assert json.loads(plain.stdout)["events"] == open_feed(out).meta.count


def test_a_second_convert_to_the_same_output_is_refused_while_the_first_writes(
    tmp_path: Path,
) -> None:
    """Both used to succeed, and the later rename silently replaced the other's feed."""
    src = book_file(tmp_path / "book.csv", rows=20, bad=0)
    out = tmp_path / "cc.npy"
    first = hold_lock(tmp_path / ".cc.npy.lock", "held")  # what the first convert holds
    try:
        with pytest.raises(UserError) as err:
            publish("tardis", [src], out, ConvertOptions())
        assert str(err.value).startswith(f"{out}: another convert is writing this feed now")
        assert not out.exists()
    finally:
        first.close()
    result, _ = publish("tardis", [src], out, ConvertOptions())
    assert result.events == open_feed(out).meta.count


def test_a_failed_parallel_task_names_its_file_once(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    job = {"key": "empty", "inputs": [str(empty)], "target": str(tmp_path / "out" / "e.npy")}
    res = run_job("binance", job, {}, False)
    assert not res["ok"]
    line = failure_line(res)
    assert line.count(str(empty)) == 1 and line.startswith(f"mm_sim convert: {empty}")
    no_path = {**res, "error": "no events"}
    assert failure_line(no_path) == f"mm_sim convert: {empty}: no events"
