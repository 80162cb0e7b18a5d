"""Does tuning earn? Out-of-sample uplift of both tuners over many days (``validate tuner``).

Each run is a real soak (``runtime.soak.Soak``) with its control arm (``--control``): the same
feed and seed with the overrides frozen at their start, so tuned and frozen see identical
events. A run's *out-of-sample uplift* is tuned minus frozen net_bps over the iterations after
the first decision (iteration 2 on): every one of them runs overrides chosen on earlier
iterations only, and iteration 1, identical in both arms, would only dilute the difference.
Both figures come from the arms' recorded fills and marks through the report's own code, and
each run's paired block-bootstrap interval says whether that run's uplift is noise.

Across runs (10 synthetic days and every real capture long enough for two iterations) the
study reports, per tuner: the mean uplift, a 95 % percentile-bootstrap interval of that mean
(runs resampled, seeded), and the share of runs where tuned beats frozen. The mean's interval
excluding zero is the issue's target; the report says plainly when it does not.
"""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.config import Overrides, Profile, given_run_settings
from mm_sim.errors import UserError
from mm_sim.events import Instrument
from mm_sim.report.edge import section
from mm_sim.report.paired import arms_difference, run_parts
from mm_sim.report.rundir import RunDir
from mm_sim.runtime.replay import plan_iterations, replay_seconds

TUNERS = ("seed", "walk-forward")
# Real captures in ../shared/data (docs/FEEDS_BINANCE.md): (name, folder, files). The 30 s
# cryptofeed samples are too short for two iterations and are listed as skipped.
CAPTURES = (
    ("spot-btcusdt", "hftbacktest-binance/spot", ("btcusdt_20240808.gz", "btcusdt_20240809.gz")),
    ("spot-ethusdt", "hftbacktest-binance/spot", ("ethusdt_20240808.gz", "ethusdt_20240809.gz")),
    ("usdm-btcusdt", "hftbacktest-binance/usdm", ("btcusdt_20240808.gz",)),
)
BOOT_RESAMPLES = 10000
BOOT_SEED = 20240


@dataclass(frozen=True)
class Day:
    label: str  # "synthetic@3", "spot-btcusdt"
    feed: str  # what `soak --feed` takes
    seed: int
    iterations: int
    iteration_minutes: float


@dataclass
class RunResult:
    day: str
    tuner: str
    tuned_net_bps: float | None
    frozen_net_bps: float | None
    uplift_bps: float | None
    uplift_lo: float | None
    uplift_hi: float | None
    iterations: int
    changes: int
    wall_s: float


def _net(parts: list[Any], profile: Profile) -> float | None:
    g = profile.gates
    return section(parts, None, g.hard.adverse_p95_max, g.venue_rules).net_bps


def out_of_sample(root: Path, profile: Profile) -> tuple[float | None, float | None, Any, int]:
    """(tuned, frozen net_bps, paired interval of the difference, iterations) from iteration 2
    on, read back from the run's two committed arms."""
    tuned = run_parts(RunDir(root))[1:]
    frozen = run_parts(RunDir(root / "control"))[1:]
    iv, _ = arms_difference(tuned, frozen, profile.gates.error_bars)
    if not tuned:
        return None, None, iv, 0
    return _net(tuned, profile), _net(frozen, profile), iv, len(tuned)


def _load(day: Day) -> tuple[Any, np.ndarray, Instrument, dict[str, Any]]:
    """A day's feed definition (as long as its runs), events, instrument and identity."""
    from mm_sim.feeds.spec import FileFeedSpec, SyntheticFeedSpec, load_events, resolve_feed

    spec = resolve_feed(day.feed)
    assert isinstance(spec, SyntheticFeedSpec | FileFeedSpec)
    if isinstance(spec, SyntheticFeedSpec):
        need = replay_seconds(day.iterations, day.iteration_minutes)
        spec = spec.model_copy(update={"duration_s": need})
    events, inst, identity = load_events(spec, day.seed)
    return spec, events, inst, identity


def check_days(days: list[Day], profile: Profile, where: str) -> list[str]:
    """Refuse, before any run, a day this profile could never quote on (as the soak refuses
    it: tuned and frozen would tie at 0 fills, and the study would stop there, its earlier
    runs lost); the notes on a size of the profile's in place of a day's own.

    A synthetic day generated here is read back from the synthetic cache by its runs.
    """
    from mm_sim.runtime.profile_fit import check_profile_fits

    notes = []
    for day in days:
        _, events, inst, _ = _load(day)
        try:
            found = check_profile_fits(where, profile, inst, profile.instrument_for(inst), events)
        except UserError as exc:
            raise UserError(f"day {day.label}: {exc}") from None
        notes += [f"{note} (day {day.label})" for note in found]
    return notes


def run_day(day: Day, tuner: str, out: Path, profile: Profile, overrides: Overrides) -> RunResult:
    """One soak with its control arm, in this process (its kernels stay loaded between runs)."""
    from mm_sim.feeds.spec import replay_clock
    from mm_sim.runtime.soak import Soak
    from mm_sim.runtime.soak_config import SoakConfig

    t0 = time.perf_counter()
    spec, events, inst, identity = _load(day)
    clock = replay_clock(spec, "auto")
    instrument: Instrument = profile.instrument_for(inst)
    plan = plan_iterations(events, day.iterations, int(day.iteration_minutes * 60e9))
    root = out / "runs" / day.label.replace("@", "-") / tuner
    settings = given_run_settings(
        profile=profile.name,
        feed=day.feed,
        iterations=day.iterations,
        iteration_minutes=day.iteration_minutes,
        seed=day.seed,
        artifacts=str(root),
        model_arms="none",
        tuner=tuner,
    )
    cfg = SoakConfig(
        settings=settings,
        profile=profile,
        overrides=overrides,
        feed_identity={**identity, **clock.record()},
        instrument=instrument,
        events=events,
        plan=plan,
        artifacts=root,
        control=True,
        charts=False,
        clock_shift_ns=clock.shift_ns,
    )
    if root.exists():
        import shutil

        shutil.rmtree(root)  # a study's runs are its own scratch space
    outcome = asyncio.run(Soak(cfg, out=io.StringIO()).run())
    tuned, frozen, iv, n = out_of_sample(root, profile)
    changes = [d for d in outcome.decisions if d.field is not None and d.driver != "operator"]
    return RunResult(
        day=day.label,
        tuner=tuner,
        tuned_net_bps=tuned,
        frozen_net_bps=frozen,
        uplift_bps=None if tuned is None or frozen is None else tuned - frozen,
        uplift_lo=iv.lo,
        uplift_hi=iv.hi,
        iterations=n,
        changes=len(changes),
        wall_s=time.perf_counter() - t0,
    )


def real_days(data: Path, out: Path, minutes: float) -> tuple[list[Day], list[str]]:
    """The captures in ``data`` as days (converted once into OUT/feeds), and what was skipped."""
    from mm_sim.events import open_feed
    from mm_sim.feeds.convert.binance import ConvertOptions, convert

    days: list[Day] = []
    skipped: list[str] = []
    if not data.is_dir():
        return days, [f"real captures: {data} not present"]
    for name, folder, files in CAPTURES:
        paths = [data / folder / f for f in files]
        if not all(p.is_file() for p in paths):
            skipped.append(f"{name}: not in {data}")
            continue
        dest = out / "feeds" / f"{name}.npy"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            convert(paths, dest, ConvertOptions())
        ts = open_feed(dest).events["exch_ts"]
        n = int((int(ts[-1]) - int(ts[0])) // int(minutes * 60e9))
        if n < 2:
            skipped.append(f"{name}: {n} full iteration(s) of {minutes:g} min")
            continue
        days.append(Day(name, str(dest), 1, n, minutes))
    skipped.append("cryptofeed-binance samples: 30 s each, shorter than two iterations")
    return days, skipped


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): 95 % percentile bootstrap of the mean over runs (seeded)."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(BOOT_SEED)
    means = x[rng.integers(0, len(x), size=(BOOT_RESAMPLES, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(x.mean()), float(lo), float(hi)


def summarize(results: list[RunResult]) -> dict[str, dict[str, Any]]:
    out = {}
    for tuner in TUNERS:
        ups = [r.uplift_bps for r in results if r.tuner == tuner and r.uplift_bps is not None]
        if not ups:
            continue
        mean, lo, hi = mean_ci(ups)
        sig = [r for r in results if r.tuner == tuner and r.uplift_lo is not None]
        out[tuner] = {
            "runs": len(ups),
            "mean_uplift_bps": mean,
            "ci_lo": lo,
            "ci_hi": hi,
            "ci_excludes_zero": lo > 0 or hi < 0,
            "win_share": sum(u > 0 for u in ups) / len(ups),
            "runs_significantly_up": sum(1 for r in sig if r.uplift_lo and r.uplift_lo > 0),
            "runs_significantly_down": sum(1 for r in sig if r.uplift_hi and r.uplift_hi < 0),
        }
    return out


def run_study(
    days: list[Day],
    out: Path,
    profile: Profile,
    overrides: Overrides,
    progress: Callable[[RunResult], None] = lambda r: None,
) -> list[RunResult]:
    results = []
    for day in days:
        for tuner in TUNERS:
            res = run_day(day, tuner, out, profile, overrides)
            progress(res)
            results.append(res)
    return results


def _f(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.3f}"


def markdown(
    results: list[RunResult], summary: dict[str, dict[str, Any]], setup: dict[str, Any]
) -> str:
    """The study's report (docs/TUNER_VALIDATION.md is this, as the command wrote it)."""
    lines = [
        "# Tuner validation: out-of-sample uplift",
        "",
        f"Written by `{setup['command']}` on {setup['written']}; do not edit by hand.",
        "",
        "Uplift = tuned − frozen net_bps (the control arm: same feed and seed, overrides frozen "
        "at their start) over iterations 2 to N of each run, when every tuned iteration runs "
        "overrides chosen on earlier iterations only. Runs: "
        f"{setup['synthetic']}; real captures: {setup['real']}.",
        "",
        "| tuner | runs | mean uplift bps | 95 % CI of the mean | tuned beats frozen | "
        "runs up (CI > 0) | runs down (CI < 0) |",
        "|---|---|---|---|---|---|---|",
    ]
    for tuner, s in summary.items():
        lines.append(
            f"| {tuner} | {s['runs']} | {s['mean_uplift_bps']:+.3f} | "
            f"[{s['ci_lo']:+.3f}, {s['ci_hi']:+.3f}] | {s['win_share']:.0%} | "
            f"{s['runs_significantly_up']} | {s['runs_significantly_down']} |"
        )
    lines.append("")
    hits = [t for t, s in summary.items() if s["ci_excludes_zero"] and s["ci_lo"] > 0]
    if hits:
        lines.append(f"Mean uplift with a CI above zero: {', '.join(hits)}.")
    else:
        lines.append(
            "No tuner reaches the target: no mean uplift has a 95 % interval that excludes zero "
            "from above (figures above)."
        )
    lines += [
        "",
        "Skipped: " + ("; ".join(setup["skipped"]) or "nothing") + ".",
        "",
        "## Runs",
        "",
        "| day | tuner | iterations (out of sample) | tuner changes | tuned net_bps | "
        "frozen net_bps | uplift bps | run's paired 95 % CI | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.day} | {r.tuner} | {r.iterations} | {r.changes} | {_f(r.tuned_net_bps)} | "
            f"{_f(r.frozen_net_bps)} | {_f(r.uplift_bps)} | [{_f(r.uplift_lo)}, "
            f"{_f(r.uplift_hi)}] | {r.wall_s:.1f} |"
        )
    return "\n".join(lines) + "\n"
