"""End to end over loopback, as a user runs it: fake-exchange, soak and record as subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".venv" / "numba-cache"))
    return env


@contextlib.contextmanager
def _serve(*args: str) -> Iterator[str]:
    """``mm_sim fake-exchange`` on a free port as a subprocess; yields its ws:// URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mm_sim", "fake-exchange", "--port", "0", *args],
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


@pytest.fixture(scope="module")
def fake_exchange() -> Iterator[str]:
    """A fake exchange at 50x real time, shared by the tests of this module."""
    with _serve("--speed", "50", "--duration-s", "120") as url:
        yield url


def _run(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    # A hang guard only (a cold numba cache on a loaded 2-core machine takes minutes).
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
    assert "SOAK RESULTS" in r.stdout and re.search(r"verdict (SUCCESS|OK|WARN|FAIL) ", r.stdout)
    for name in ("SOAK_RESULTS.md", "EDGE_REPORT.json", "KPI_GATE.json"):
        assert (art / "reports" / name).exists(), name
    live = json.loads((art / "soak" / "live_feed.json").read_text())
    assert live["feed"]["fake"] is True and live["client"]["diffs"] > 0
    assert live["book_sync"]["rebases"] >= 1 and live["book_sync"]["gaps"] == 0
    metrics = [json.loads(x) for x in (art / "soak" / "metrics.jsonl").read_text().splitlines()]
    assert len([m for m in metrics if "iteration" in m]) >= 2


def test_a_profile_tick_that_does_not_fit_the_venues_is_refused(
    fake_exchange: str, tmp_path: Path
) -> None:
    """As on a replay: a tick 10,000x the venue's (a unit slip) ran a live soak that could
    never quote. The venue's tick comes from its exchange info, so it is checked on connect."""
    profile = json.loads((REPO / "profiles" / "market_maker_S1.json").read_text())
    profile["instrument"]["tick_size"] = 1000.0
    (tmp_path / "p.json").write_text(json.dumps(profile))
    r = _run(["soak", "--feed", fake_exchange, "--profile", str(tmp_path / "p.json"),
              "--iterations", "1", "--iteration-minutes", "0.2",
              "--artifacts", str(tmp_path / "a")])  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "instrument.tick_size 1000 is 1e+04x the feed's own 0.1" in r.stderr
    assert "Traceback" not in r.stderr and "SOAK RESULTS" not in r.stdout


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


# --- a short live soak against a fresh exchange, compared with the replay of the same feed ---

SECRET_KEY = "mm-test-key-7f3c2a91d4"
SECRET = "mm-test-secret-0b8e55c6a2"
SHORT = ["--iterations", "2", "--iteration-minutes", "0.75"]


@pytest.fixture(scope="module")
def live_and_replay(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One live soak (credentials set in its environment, DEBUG logs) on a fresh fake exchange
    serving synthetic-short from its start at 20x, and the replay soak of the same feed."""
    tmp = tmp_path_factory.mktemp("live_vs_replay")
    env = {**_env(), "MM_BINANCE_API_KEY": SECRET_KEY, "MM_BINANCE_API_SECRET": SECRET}
    with _serve("--speed", "20", "--duration-s", "300") as url:
        live = subprocess.run(
            [sys.executable, "-m", "mm_sim", "--log-level", "DEBUG", "soak", "--feed", url,
             *SHORT, "--artifacts", str(tmp / "live")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    replay = _run(["soak", "--feed", "synthetic-short", *SHORT, "--artifacts", str(tmp / "replay")])
    assert live.returncode == 0, live.stderr[-2000:]
    assert replay.returncode == 0, replay.stderr[-2000:]
    return {"tmp": tmp, "live": live, "replay": replay}


def _totals(art: Path) -> dict:
    return json.loads((art / "reports" / "EDGE_REPORT.json").read_text())["totals"]


def test_short_live_soak_fills_and_blocks_like_the_replay(live_and_replay: dict) -> None:
    """The S1 strategy trades on the live path as it does in replay: fills, the same dominant
    block reasons, a quoted spread of the same size (a clock or unit mismatch between the
    exchange clock and receive times would show in all three)."""
    tmp = live_and_replay["tmp"]
    live, replay = _totals(tmp / "live"), _totals(tmp / "replay")
    assert live["fills"] > 0 and replay["fills"] > 0

    def dominant(t: dict) -> set[str]:
        return {k for k, v in t["block_reasons"]["ratios"].items() if v >= 0.1}

    assert dominant(live) == dominant(replay) and dominant(live)
    ratio = live["quotes"]["quoted_spread_bps_p50"] / replay["quotes"]["quoted_spread_bps_p50"]
    assert 0.5 < ratio < 2.0


def test_credentials_are_never_written_or_logged(live_and_replay: dict) -> None:
    tmp: Path = live_and_replay["tmp"]
    live = live_and_replay["live"]
    assert "credentials found" in live.stderr  # the live path did read them
    for text in (live.stdout, live.stderr):
        assert SECRET_KEY not in text and SECRET not in text
    files = [p for p in (tmp / "live").rglob("*") if p.is_file()]
    assert any(p.name == "run.json" for p in files) and len(files) > 5
    for p in files:
        data = p.read_bytes()
        assert SECRET_KEY.encode() not in data and SECRET.encode() not in data, p
    counters = json.loads((tmp / "live" / "soak" / "live_feed.json").read_text())
    assert counters["credentials"] == {"api_key": "set", "api_secret": "set"}


def test_credentials_model_masks_its_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from mm_sim.venues.binance.credentials import BinanceCredentials, load_credentials

    monkeypatch.setenv("MM_BINANCE_API_KEY", SECRET_KEY)
    monkeypatch.setenv("MM_BINANCE_API_SECRET", SECRET)
    creds = load_credentials()
    assert isinstance(creds, BinanceCredentials) and creds.configured
    for shown in (repr(creds), str(creds), str(creds.api_key), creds.model_dump_json()):
        assert SECRET_KEY not in shown and SECRET not in shown
    assert str(creds.api_key) == "**********" and "**********" in repr(creds)
    assert creds.api_secret is not None and creds.api_secret.get_secret_value() == SECRET


def test_killed_live_soak_resumes_from_its_last_committed_iteration(
    fake_exchange: str, tmp_path: Path
) -> None:
    art = tmp_path / "art"
    args = ["soak", "--feed", fake_exchange, "--iterations", "3", "--iteration-minutes", "0.8",
            "--artifacts", str(art)]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "mm_sim", *args],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("iteration 0 (1/3 done)"):
            proc.kill()  # SIGKILL: no handler runs, nothing is tidied up
            break
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    metrics = art / "soak" / "metrics.jsonl"
    before = [x for x in metrics.read_text().splitlines() if x.strip()]
    committed = [json.loads(x)["iteration"] for x in before]
    assert committed and committed == list(range(len(committed))) and len(committed) < 3
    run_json = (art / "soak" / "run.json").read_bytes()

    r = _run([*args, "--resume"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming after iteration {committed[-1]} ({len(committed)}/3 done" in r.stdout
    after = [x for x in metrics.read_text().splitlines() if x.strip()]
    assert after[: len(before)] == before  # committed iterations kept as they were
    assert [json.loads(x)["iteration"] for x in after] == [0, 1, 2]
    assert (art / "soak" / "run.json").read_bytes() == run_json
    assert (art / "reports" / "SOAK_RESULTS.md").exists()
    feed = json.loads((art / "soak" / "live_feed.json").read_text())
    assert len(feed["previous_sessions"]) == 1  # the killed session's counters are kept
    assert feed["client"]["diffs"] > 0 and feed["book_sync"]["gaps"] == 0


def _recording(url: str, minutes: str, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mm_sim", "record", "--feed", url, "--minutes", minutes, "-o",
         str(out)],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_events(proc: subprocess.Popen[str], out: Path) -> None:
    """Until the recording's temp file holds some events (the writer streams to it)."""
    while not any(p.stat().st_size > 4096 for p in out.parent.glob(f".{out.name}.*.tmp")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_record_stopped_by_a_signal_keeps_its_events_and_says_it_is_short(
    fake_exchange: str, tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    """Ctrl-C ended with exit 0 and the lines of a whole recording (no WARNING: the pre-flight
    check of docs/LIVE.md passed a recording of seconds); SIGTERM killed the process, losing
    the events and leaving the hidden temp file."""
    out = tmp_path / "rec.npy"
    proc = _recording(fake_exchange, "30", out)
    try:
        _wait_for_events(proc, out)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, stderr[-1500:]
    assert "recorded " in stdout and "WARNING: " in stdout and "the recording is short" in stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["count"] > 0 and meta["stats"]["interrupted"] is True
    assert list(tmp_path.glob(".*.tmp")) == []
    r = _run(["inspect", str(out), "--json"])
    assert r.returncode == 0 and json.loads(r.stdout)["events"] == meta["count"]


def test_record_says_when_the_venue_went_away_half_way(tmp_path: Path) -> None:
    """A fake exchange killed during the recording: the client reconnected in vain until the
    end and the recording ended with exit 0 and no WARNING, as a whole one does."""
    out = tmp_path / "rec.npy"
    with _serve("--speed", "10") as url:
        proc = _recording(url, "1", out)
        try:
            _wait_for_events(proc, out)
        except BaseException:
            proc.kill()
            raise
    # The server is gone (the context stopped it); the recording runs to its end.
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-1500:]
    assert "WARNING: the stream was lost 1 time(s)" in stdout, stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["stats"]["client"]["disconnects"] == 1 and meta["count"] > 0


def test_record_into_a_folder_names_the_file_inside_it(fake_exchange: str, tmp_path: Path) -> None:
    """-o naming a folder wrote FOLDER.npy beside it; -o x.json wrote x.json.npy and
    x.json.json."""
    folder = tmp_path / "recs"
    folder.mkdir()
    r = _run(["record", "--feed", fake_exchange, "--minutes", "0.05", "-o", str(folder)])
    assert r.returncode == 0, r.stderr[-1500:]
    (npy,) = folder.glob("fake-exchange-*.npy")
    assert npy.with_suffix(".json").is_file() and sorted(tmp_path.iterdir()) == [folder]
    r = _run(
        ["record", "--feed", fake_exchange, "--minutes", "0.05", "-o", str(tmp_path / "x.json")]
    )
    assert r.returncode == 2 and "-o names the feed's .npy" in r.stderr, r.stderr[-1500:]
    assert sorted(tmp_path.iterdir()) == [folder]


def test_record_of_a_feed_that_sends_nothing_writes_nothing(tmp_path: Path) -> None:
    """Every frame held back longer than the recording: 0 events were published as a feed
    that every reader refuses, with exit 0 and no warning."""
    out = tmp_path / "none.npy"
    with _serve("--speed", "20", "--stream-delay-s", "600") as url:
        r = _run(["record", "--feed", url, "--minutes", "0.1", "-o", str(out)])
    assert r.returncode == 2, r.stderr[-1500:]
    assert "no event arrived in 0.1 exchange-clock minutes; nothing written" in r.stderr
    assert "Traceback" not in r.stderr and list(tmp_path.iterdir()) == []
