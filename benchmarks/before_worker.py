"""Engine throughput on saved event arrays, in whichever tree ``PYTHONPATH`` points at.

Run by ``benchmarks.before`` twice over the same files: once against the core as it was before
two clocks (an old commit's tree, extracted with ``git archive``) and once against this tree,
so the two figures come from the same script, the same events and adjacent minutes. It uses
only what both trees have: ``load_profile``, ``Overrides``, ``Engine(...).run`` and
``Instrument(symbol, venue, tick_size, lot_size)``, and the S1 quote size raised to one lot
where the lot is larger (``benchmarks.data.profile_for`` in both).

    python before_worker.py JOB.json OUT.json
    JOB: {"repeats": 3, "min_timed_s": 0.3, "feeds": [{"name", "events": path.npy, "symbol",
          "venue", "tick_size", "lot_size"}]}
    OUT: {"feeds": {name: {"events", "runs", "best_s", "ns_per_event"}}}

A feed is run ``repeats`` times, and a small one again until ``min_timed_s`` of runs were
timed: a 2,000-event capture runs in ~150 us, and whether a fresh engine's first touch of its
book pages faults (0-190 minor faults, up to ~30 % of that run, varying with what the allocator
reuses) decided the fastest of three, not the core.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

MAX_RUNS = 5000  # a bound on the small feeds' repeats (NKNUSDT: ~2,000 runs for 0.3 s)


def main(job_path: str, out_path: str) -> None:
    from benchmarks.data import profile_for
    from mm_sim.config import Overrides, load_profile
    from mm_sim.core.engine import Engine
    from mm_sim.events import Instrument

    job = json.loads(Path(job_path).read_text())
    base = load_profile("S1")
    min_s = float(job.get("min_timed_s", 0.0))
    out: dict[str, dict[str, float]] = {}
    for f in job["feeds"]:
        events = np.load(f["events"])
        inst = Instrument(
            symbol=f["symbol"], venue=f["venue"], tick_size=f["tick_size"], lot_size=f["lot_size"]
        )
        profile, _ = profile_for(base, inst)
        Engine(profile, Overrides(), inst, 1).run(events[:256])  # kernels loaded, not timed
        best = float("inf")
        timed = 0.0
        runs = 0
        while runs < int(job["repeats"]) or (timed < min_s and runs < MAX_RUNS):
            eng = Engine(profile, Overrides(), inst, 1)
            t0 = time.perf_counter()
            eng.run(events)
            dt = time.perf_counter() - t0
            best = min(best, dt)
            timed += dt
            runs += 1
        out[f["name"]] = {
            "events": len(events),
            "runs": runs,
            "best_s": best,
            "ns_per_event": best / len(events) * 1e9,
        }
    Path(out_path).write_text(json.dumps({"feeds": out}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
