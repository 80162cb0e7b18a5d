"""End to end over loopback, as a user runs it: fake-exchange, soak and record as subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".venv" / "numba-cache"))
    return env


@pytest.fixture(scope="module")
def fake_exchange() -> Iterator[str]:
    """A fake exchange on a free port at 50x real time; yields its ws:// URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mm_sim",
            "fake-exchange",
            "--port",
            "0",
            "--speed",
            "50",
            "--duration-s",
            "120",
        ],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once listening
        m = re.search(r"ws://127\.0\.0\.1:\d+", line)
        assert m, f"no listening line: {line!r} {proc.stderr.read() if proc.poll() else ''}"
        yield m.group(0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mm_sim", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_paper_trading_soak_on_the_fake_exchange(fake_exchange: str, tmp_path: Path) -> None:
    art = tmp_path / "art"
    r = _run(
        [
            "soak",
            "--feed",
            fake_exchange,
            "--iterations",
            "2",
            "--iteration-minutes",
            "0.2",
            "--artifacts",
            str(art),
        ]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "SOAK RESULTS" in r.stdout and re.search(r"verdict (PASS|FAIL|WARN)", r.stdout)
    for name in ("SOAK_RESULTS.md", "EDGE_REPORT.json", "KPI_GATE.json"):
        assert (art / "reports" / name).exists(), name
    live = json.loads((art / "soak" / "live_feed.json").read_text())
    assert live["feed"]["fake"] is True and live["client"]["diffs"] > 0
    assert live["book_sync"]["rebases"] >= 1 and live["book_sync"]["gaps"] == 0
    metrics = [json.loads(x) for x in (art / "soak" / "metrics.jsonl").read_text().splitlines()]
    assert len([m for m in metrics if "iteration" in m]) >= 2


def test_record_writes_a_feed_that_inspect_reads(fake_exchange: str, tmp_path: Path) -> None:
    out = tmp_path / "rec.npy"
    r = _run(["record", "--feed", fake_exchange, "--minutes", "0.1", "-o", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.exists() and out.with_suffix(".json").exists()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["source"]["format"] == "binance-live" and meta["count"] > 0
    r = _run(["inspect", str(out), "--json"])
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout)
    assert info["events"] == meta["count"]
    assert info["events_by_kind"]["snapshot"] > 0 and info["events_by_kind"]["depth"] > 0


def test_live_feed_errors_are_user_errors(tmp_path: Path) -> None:
    r = _run(["record", "--feed", "synthetic-short", "--minutes", "0.1", "-o", "x.npy"])
    assert r.returncode == 2 and "not live" in r.stderr and "Traceback" not in r.stderr
    r = _run(["soak", "--feed", "ws://127.0.0.1:1", "--artifacts", str(tmp_path / "a")])
    assert r.returncode == 2 and "cannot reach" in r.stderr and "Traceback" not in r.stderr
