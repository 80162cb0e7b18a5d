"""Feed definitions: what ``--feed NAME|PATH`` names and how to get replayable events from it.

A definition is a small JSON file in ``feeds/`` (``feeds/<name>.json``) or anywhere on disk:

- ``{"kind": "synthetic", "params": {...}, "duration_s": 10800}``: the embedded generator;
- ``{"kind": "file", "path": "relative/or/absolute.npy"}``: a converted or recorded feed
  (relative paths resolve against the definition's folder);
- ``{"kind": "binance-ws", ...}``: a live websocket feed (see ``mm_sim/venues/binance``).

A bare path to a ``.npy`` feed works too, without a definition.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mm_sim.config import FEEDS_DIR, read_json_file
from mm_sim.errors import UserError
from mm_sim.events import Instrument, open_feed


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    description: str = ""


class SyntheticFeedSpec(_Spec):
    kind: Literal["synthetic"]
    params: dict[str, Any] = Field(default_factory=dict)
    duration_s: float = Field(10800.0, gt=0)


class FileFeedSpec(_Spec):
    kind: Literal["file"]
    path: str


FeedSpec = Annotated[SyntheticFeedSpec | FileFeedSpec, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[SyntheticFeedSpec | FileFeedSpec] = TypeAdapter(FeedSpec)


def known_feeds() -> list[str]:
    return sorted(p.stem for p in FEEDS_DIR.glob("*.json"))


def resolve_feed(name_or_path: str | os.PathLike[str]) -> SyntheticFeedSpec | FileFeedSpec:
    s = str(name_or_path)
    p = Path(s)
    if p.suffix == ".npy" or (p.with_name(p.name + ".npy").exists() and p.suffix != ".json"):
        return FileFeedSpec(kind="file", path=str(p), name=p.stem)
    if p.suffix == ".json" and p.exists():
        definition = p
    elif (FEEDS_DIR / f"{s}.json").exists():
        definition = FEEDS_DIR / f"{s}.json"
    else:
        raise UserError(
            f"unknown feed {s!r}: not a .npy feed or a definition; known: {known_feeds()}"
        )
    data = read_json_file(definition, "feed definition")
    data.setdefault("name", definition.stem)
    try:
        spec = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        errs = "; ".join(
            f"field '{'.'.join(map(str, e['loc']))}' = {e.get('input')!r}: {e['msg']}"
            for e in exc.errors()
        )
        raise UserError(f"{definition}: invalid feed definition: {errs}") from None
    if isinstance(spec, FileFeedSpec) and not Path(spec.path).is_absolute():
        spec = spec.model_copy(update={"path": str((definition.parent / spec.path).resolve())})
    return spec


def load_events(
    spec: SyntheticFeedSpec | FileFeedSpec, seed: int
) -> tuple[np.ndarray, Instrument, dict[str, Any]]:
    """Events (memory-mapped for files), instrument and a feed identity for run records."""
    if isinstance(spec, FileFeedSpec):
        feed = open_feed(spec.path)
        identity = {"kind": "file", "path": str(feed.path), "count": len(feed.events)}
        return feed.events, feed.instrument, identity
    from mm_sim.feeds.synthetic import SyntheticParams, generate

    try:
        params = SyntheticParams(**spec.params)
    except ValidationError as exc:
        errs = "; ".join(
            f"params.{'.'.join(map(str, e['loc']))} = {e.get('input')!r}: {e['msg']}"
            for e in exc.errors()
        )
        raise UserError(f"feed {spec.name!r}: invalid synthetic parameters: {errs}") from None
    events, instrument = generate(params, seed=seed, duration_s=spec.duration_s)
    identity = {
        "kind": "synthetic",
        "name": spec.name,
        "params": params.model_dump(),
        "duration_s": spec.duration_s,
        "seed": seed,
        "count": len(events),
    }
    return events, instrument, identity
