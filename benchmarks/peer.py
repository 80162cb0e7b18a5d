"""Side by side with hftbacktest (optional extra ``peer``) on the same synthetic feed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.config import Profile
from mm_sim.events import Instrument

NOT_INSTALLED = "not installed: pip install -e .[peer]"


def available() -> bool:
    return importlib.util.find_spec("hftbacktest") is not None


def compare(
    events: np.ndarray, instrument: Instrument, profile: Profile, work: Path
) -> dict[str, Any]:
    if not available():
        return {"peer": NOT_INSTALLED}
    return {"peer": "installed, comparison not implemented yet"}
