"""Random corruptions of a real feed file and a real run directory, fed to the CLI: whatever
the damage, the answer is a result or one clear error, never a traceback or an internal error.

The CLI runs in-process (``mm_sim.cli.main``) so each example costs milliseconds to a second;
the subprocess path is covered by tests/test_bad_inputs.py. Examples are derandomized and few
(the whole module stays well under a minute).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mm_sim.cli import main

RUN = ["--iterations", "2", "--iteration-minutes", "0.05", "--model-arms", "none"]
SETTINGS = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mm_sim.events import write_feed
    from mm_sim.feeds.synthetic import SyntheticParams, generate

    events, inst = generate(SyntheticParams(), seed=9, duration_s=12)
    return write_feed(tmp_path_factory.mktemp("feed") / "f.npy", events, inst)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, feed: Path) -> Path:
    out = tmp_path_factory.mktemp("run") / "art"
    assert main(["soak", "--feed", str(feed), *RUN, "--artifacts", str(out)]) == 0
    return out


def clean(capsys: pytest.CaptureFixture[str], code: int) -> None:
    out, err = capsys.readouterr()
    both = out + err
    assert "Traceback" not in both and "internal error" not in both, both[-3000:]
    assert code in (0, 1, 2), (code, both[-3000:])
    if code == 2:  # refused: one message naming the culprit (1: inspect listed problems)
        assert [ln for ln in err.splitlines() if ln.startswith("mm_sim")], err[-3000:]


damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(
        st.just("flip"),
        st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=8),
    ),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("empty"), st.none()),
)


def corrupt(path: Path, how: tuple) -> None:
    kind, arg = how
    raw = bytearray(path.read_bytes())
    if kind == "truncate":
        raw = raw[: int(len(raw) * arg)]
    elif kind == "flip":
        for pos, mask in arg:
            if raw:
                raw[min(int(pos * len(raw)), len(raw) - 1)] ^= mask
    elif kind == "garbage":
        raw = raw[: len(raw) // 2] + arg
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))


FIELD_DAMAGE = st.sampled_from(
    [
        ("price", np.nan), ("price", np.inf), ("price", -1.0), ("qty", -3.0), ("qty", np.nan),
        ("kind", 0), ("kind", 77), ("side", 0), ("side", 9), ("exch_ts", 0), ("exch_ts", -5),
    ]
)  # fmt: skip


@SETTINGS
@given(
    target=st.sampled_from(["npy", "json"]),
    how=damage,
    fields=st.lists(st.tuples(FIELD_DAMAGE, st.floats(0, 1)), max_size=4),
)
def test_corrupt_feed(feed: Path, capsys, target: str, how: tuple, fields: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if fields:  # values a recorder could have written: a consistent feed of bad records
            from mm_sim.events import open_feed, write_feed

            f = open_feed(feed)
            ev = np.array(f.events)
            for (name, value), pos in fields:
                ev[name][int(pos * (len(ev) - 1))] = value
            p = write_feed(d / "f.npy", ev, f.instrument)
        else:  # bytes damaged on disk
            shutil.copy(feed, d / "f.npy")
            shutil.copy(feed.with_suffix(".json"), d / "f.json")
            p = d / "f.npy"
            corrupt(p if target == "npy" else p.with_suffix(".json"), how)
        clean(capsys, main(["inspect", str(p), "--json"]))
        clean(capsys, main(["soak", "--feed", str(p), *RUN, "--artifacts", str(d / "a")]))


RUN_FILES = [
    "soak/run.json",
    "soak/metrics.jsonl",
    "soak/runtime_overrides.json",
    "soak/records/fills.bin",
    "soak/records/marks.bin",
    "soak/records/actions.bin",
    "soak/checkpoints/iteration-00001.npz",
    "soak/checkpoints/iteration-00000.npz",
]


@SETTINGS
@given(target=st.sampled_from(RUN_FILES), how=damage, cut=st.booleans())
def test_corrupt_run_dir(
    run_dir: Path, feed: Path, capsys, target: str, how: tuple, cut: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "run"
        shutil.copytree(run_dir, d)
        if cut:  # as if killed after the first iteration: resume has work to do
            m = d / "soak" / "metrics.jsonl"
            m.write_bytes(b"".join(m.read_bytes().splitlines(keepends=True)[:1]))
        if (d / target).exists():
            corrupt(d / target, how)
        clean(capsys, main(["report", str(d), "--no-charts"]))
        clean(
            capsys,
            main(["soak", "--feed", str(feed), *RUN, "--resume", "--artifacts", str(d)]),
        )
