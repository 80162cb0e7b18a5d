"""Engine throughput on saved event arrays, in whichever tree ``PYTHONPATH`` points at.

Run by ``benchmarks.before`` twice over the same files: once against the core as it was before
two clocks (an old commit's tree, extracted with ``git archive``) and once against this tree,
so the two figures come from the same script, the same events and adjacent minutes. It uses
only what both trees have: ``load_profile``, ``Overrides``, ``Engine(...).run`` and
``Instrument(symbol, venue, tick_size, lot_size)``, and the S1 quote size raised to one lot
where the lot is larger (``benchmarks.data.profile_for`` in both).

    python before_worker.py JOB.json OUT.json
    JOB: {"repeats": 3, "feeds": [{"name", "events": path.npy, "symbol", "venue",
          "tick_size", "lot_size"}]}
    OUT: {"feeds": {name: {"events", "best_s", "ns_per_event"}}}
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def main(job_path: str, out_path: str) -> None:
    from benchmarks.data import profile_for
    from mm_sim.config import Overrides, load_profile
    from mm_sim.core.engine import Engine
    from mm_sim.events import Instrument

    job = json.loads(Path(job_path).read_text())
    base = load_profile("S1")
    out: dict[str, dict[str, float]] = {}
    for f in job["feeds"]:
        events = np.load(f["events"])
        inst = Instrument(
            symbol=f["symbol"], venue=f["venue"], tick_size=f["tick_size"], lot_size=f["lot_size"]
        )
        profile, _ = profile_for(base, inst)
        Engine(profile, Overrides(), inst, 1).run(events[:256])  # kernels loaded, not timed
        best = float("inf")
        for _ in range(int(job["repeats"])):
            eng = Engine(profile, Overrides(), inst, 1)
            t0 = time.perf_counter()
            eng.run(events)
            best = min(best, time.perf_counter() - t0)
        out[f["name"]] = {
            "events": len(events),
            "best_s": best,
            "ns_per_event": best / len(events) * 1e9,
        }
    Path(out_path).write_text(json.dumps({"feeds": out}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
