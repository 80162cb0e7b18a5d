"""Permanent errors are user errors: checked at definition load, or stopped at the first 4xx.

A bad snapshot limit or symbol used to be retried forever (every non-200 answer was); now the
definition is checked against each market's documented limits when it is loaded, and a 4xx
other than 429/418 stops the feed with the venue's own message.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from live_harness import MODES, running, small_feed
from test_live_soak import _env, _serve

from mm_sim.errors import UserError
from mm_sim.feeds.spec import resolve_feed

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def feed():
    return small_feed()


def _record(definition: Path, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mm_sim", "record", "--feed", str(definition), "--minutes", "1"]
    cmd += ["-o", str(out)]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)


def _write(tmp_path: Path, **fields: object) -> Path:
    data = {
        "kind": "binance-ws",
        "ws_base": "ws://127.0.0.1:1",
        "rest_base": "http://127.0.0.1:1",
        "symbol": "BTCUSDT",
        **fields,
    }
    path = tmp_path / "def.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("market", "limit", "expected"),
    [
        ("futures", 2000, "5, 10, 20, 50, 100, 500, 1000"),
        ("futures", 7, "5, 10, 20, 50, 100, 500, 1000"),
        ("spot", 6000, "5000"),
    ],
)
def test_snapshot_limit_is_checked_when_the_definition_is_loaded(
    tmp_path, market: str, limit: int, expected: str
) -> None:
    path = _write(tmp_path, market=market, snapshot_limit=limit)
    with pytest.raises(UserError) as err:
        resolve_feed(str(path))
    msg = str(err.value)
    assert str(path) in msg and expected in msg and "snapshot_limit" in msg


@pytest.mark.parametrize(
    ("margin", "named"), [("coin-m", "COIN-M futures"), ("usd-m", "USD-M futures")]
)
def test_a_refused_futures_limit_names_the_definitions_own_market(
    tmp_path, margin: str, named: str
) -> None:
    path = _write(tmp_path, market="futures", margin=margin, snapshot_limit=7)
    with pytest.raises(UserError) as err:
        resolve_feed(str(path))
    other = ({"COIN-M", "USD-M"} - {named.split()[0]}).pop()
    assert named in str(err.value) and other not in str(err.value)


def test_a_coinm_fake_refuses_a_bad_limit_naming_coinm(tmp_path) -> None:
    """The market is asked from the fake exchange, so the limit is checked when the feed is
    opened: it serves an inverse feed as COIN-M, and the refusal must say so."""
    from test_inverse import coinm_definition

    synth = coinm_definition(tmp_path / "synth.json")
    with _serve("--feed", str(synth), "--market", "futures") as url:
        port = url.rsplit(":", 1)[1]
        path = _write(
            tmp_path,
            fake=True,
            symbol=None,
            ws_base=f"ws://127.0.0.1:{port}",
            rest_base=f"http://127.0.0.1:{port}",
            snapshot_limit=7,
        )
        res = _record(path, tmp_path / "x.npy")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "snapshot_limit 7 is not allowed on COIN-M futures" in res.stderr
    assert "USD-M" not in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("limit", [5, 500, 1000])
def test_documented_futures_limits_load(tmp_path, limit: int) -> None:
    assert resolve_feed(str(_write(tmp_path, market="futures", snapshot_limit=limit)))


def test_a_connection_layout_without_trades_is_refused(tmp_path) -> None:
    path = _write(
        tmp_path, market="futures", connections=[{"path": "/public", "streams": ["depth"]}]
    )
    with pytest.raises(UserError, match="exactly one connection must carry 'trade'"):
        resolve_feed(str(path))


async def _stopped(run) -> UserError:
    """Wait until the client stopped on a permanent error; in pull mode poll raises it."""
    cl = run.cl
    if run.mode == "pull":
        with pytest.raises(UserError) as err:
            await run.until(lambda: False)
        return err.value
    await run.until(lambda: cl.fatal is not None)
    assert cl.fatal is not None
    return cl.fatal


@pytest.mark.parametrize("mode", MODES)
async def test_bad_symbol_stops_with_the_venues_message(feed, mode: str) -> None:
    async with running(feed, mode, warmup_s=0.0) as run:
        run.cl.cfg = run.cl.cfg.__class__(**{**run.cl.cfg.__dict__, "symbol": "NOPEUSDT"})
        run.cl._epoch += 1  # the next snapshot request uses the changed config
        run.cl._start_snapshot()
        err = await _stopped(run)
        assert "Invalid symbol. (code -1121)" in str(err) and "HTTP 400" in str(err)
        assert run.cl.counters.permanent_errors == 1


@pytest.mark.parametrize("mode", MODES)
async def test_bad_limit_stops_at_the_first_answer(feed, mode: str) -> None:
    async with running(feed, mode, "futures", warmup_s=0.0, snapshot_limit=7) as run:
        err = await _stopped(run)
        assert "Illegal value for parameter 'limit'" in str(err)
        assert run.cl.counters.snapshot_fetches == 1  # not a retry loop


def test_record_reports_a_refused_snapshot_as_a_user_error(tmp_path) -> None:
    with _serve("--symbol", "BTCUSDT") as url:
        port = url.rsplit(":", 1)[1]
        rest = f"http://127.0.0.1:{port}"
        urllib.request.urlopen(
            urllib.request.Request(f"{rest}/fake/inject?fault=bad-request", method="POST")
        ).read()
        path = _write(tmp_path, market="spot", ws_base=f"ws://127.0.0.1:{port}", rest_base=rest)
        res = _record(path, tmp_path / "x.npy")
    assert res.returncode != 0
    assert "Invalid symbol. (code -1121)" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "x.npy").exists()
