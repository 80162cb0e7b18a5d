"""``benchmarks/live_latency.py`` runs end to end (figures are the bench's business, not ours)."""

from __future__ import annotations

import numpy as np

from benchmarks.live_latency import _service_times, measure


def test_service_time_excludes_the_wait_behind_earlier_frames() -> None:
    # three frames: alone; queued behind the first; two decided together later
    dec = np.array([10_000, 20_000, 60_000, 60_000])
    rx = np.array([0, 5_000, 50_000, 55_000])
    got = _service_times(dec - rx, dec)
    assert got.tolist() == [10.0, 10.0, 10.0, 5.0]


def test_tiny_measurement_reports_every_figure() -> None:
    r = measure("tiny")
    assert r["messages"] > 0 and r["frames_with_decision"] > 0
    for key in ("latency_us", "service_us", "end_to_end_us"):
        d = r[key]
        assert 0 < d["p50"] <= d["p99"] <= d["p99_9"] <= d["max"], key
    assert r["service_us"]["p50"] <= r["latency_us"]["p50"]
    assert r["gaps"] == 0 and r["overflow"] == 0
    assert r["server"]["messages"] > 0 and r["clock_speed"] > 1
    assert isinstance(r["met"], bool) and "data_received" in r["method"]


def test_tiny_pull_mode_measurement_reports_every_figure() -> None:
    from benchmarks.live_latency import measure_pull

    r = measure_pull("tiny")
    assert r["frames_with_decision"] > 0 and r["chunks"] > 0 and r["overflow"] == 0
    for key in ("latency_us", "end_to_end_us"):
        d = r[key]
        assert 0 < d["p50"] <= d["p99"] <= d["max"], key
    tail = r["end_to_end_tail"]
    assert tail["clustered"] + tail["ours"] == tail["frames_over_p99"] > 0
    assert "shift_ms" in r["clock"] and "50 ms" in r["path"]
