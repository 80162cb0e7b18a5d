"""Feed definitions: what ``--feed NAME|PATH`` names and how to get replayable events from it.

A definition is a small JSON file in ``feeds/`` (``feeds/<name>.json``) or anywhere on disk:

- ``{"kind": "synthetic", "params": {...}, "duration_s": 10800}``: the embedded generator;
- ``{"kind": "file", "path": "relative/or/absolute.npy"}``: a converted or recorded feed
  (relative paths resolve against the definition's folder);
- ``{"kind": "binance-ws", "market": "spot", "ws_base": ..., "rest_base": ..., "symbol": ...}``:
  a live websocket feed (see ``mm_sim/venues/binance`` and docs/LIVE.md).

A bare path to a ``.npy`` feed works too, without a definition. Live feeds also resolve from
``NAME:SYMBOL`` (a binance-ws definition with another symbol, e.g. ``binance-spot-testnet:ETHUSDT``)
and from ``ws://HOST:PORT`` (an mm_sim fake exchange, which describes itself at ``/fake/info``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from mm_sim.config import FEEDS_DIR, read_json_file
from mm_sim.errors import UserError
from mm_sim.events import Instrument, open_feed
from mm_sim.feeds.clock import GENERATED, AppliedClock, choose_clock, model_of


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    description: str = ""


# The generator holds the whole market it makes in memory (~27 kB a simulated second at the
# default parameters): two days is ~4.6 GB. Checked where a duration is used (load_events), as
# the soak and the sweep set it from their iterations x minutes.
MAX_SYNTHETIC_S = 172_800.0


class SyntheticFeedSpec(_Spec):
    kind: Literal["synthetic"]
    params: dict[str, Any] = Field(default_factory=dict)
    duration_s: float = Field(10800.0, gt=0)


def check_synthetic_duration(spec: SyntheticFeedSpec, label: str) -> None:
    """Refuse a synthetic market longer than memory holds (1e12 s was a MemoryError of 27.8
    PiB); the soak and the sweep call it with the duration their iterations ask for."""
    if spec.duration_s > MAX_SYNTHETIC_S:
        raise UserError(
            f"feed {label}: {spec.duration_s:g} s of synthetic market (a run makes iterations x "
            f"minutes of it) is more than the {MAX_SYNTHETIC_S:g} s (48 h) one can hold in "
            "memory; run fewer or shorter iterations"
        )


class FileFeedSpec(_Spec):
    kind: Literal["file"]
    path: str


# Allowed REST depth snapshot limits (docs/LIVE.md): USD-M (GET /fapi/v1/depth) and COIN-M
# (GET /dapi/v1/depth) futures take only these values; spot takes any limit from 1 to 5000.
FUTURES_SNAPSHOT_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
SPOT_SNAPSHOT_MAX = 5000
_FUTURES_NAMES = {"usd-m": "USD-M futures", "coin-m": "COIN-M futures"}


def snapshot_limit_error(market: str, limit: int, margin: str | None) -> str | None:
    """Why ``limit`` is not a valid depth snapshot limit on ``market`` (None when it is).

    ``margin`` only names the market in the message (both futures APIs take the same
    limits), so a COIN-M definition is not told it is on USD-M; None where it is not known
    yet (a fake exchange says what it serves only when asked)."""
    if market == "futures" and limit not in FUTURES_SNAPSHOT_LIMITS:
        where = _FUTURES_NAMES.get(margin or "", "futures")
        return (
            f"snapshot_limit {limit} is not allowed on {where}: expected one of "
            f"{', '.join(map(str, FUTURES_SNAPSHOT_LIMITS))}"
        )
    if market == "spot" and not 1 <= limit <= SPOT_SNAPSHOT_MAX:
        return f"snapshot_limit {limit} is not allowed on spot: expected 1..{SPOT_SNAPSHOT_MAX}"
    return None


class StreamRoute(BaseModel):
    """One websocket connection of a live feed: its path under ``ws_base`` and which of the
    feed's streams it carries (``depth``, ``trade``); all connections merge into one stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field("", pattern=r"^(/[A-Za-z0-9_.-]+)*$", description="e.g. /public, or ''")
    streams: tuple[Literal["depth", "trade"], ...] = Field(min_length=1)


class BinanceLiveFeedSpec(_Spec):
    """A live Binance (or fake exchange) feed; URLs are bases, paths follow Binance's layout.

    ``market``/``symbol``/tick/lot left empty are asked from the server: ``/fake/info`` on the
    fake exchange (``fake: true``), ``exchangeInfo`` on Binance.
    """

    kind: Literal["binance-ws"]
    market: Literal["spot", "futures"] | None = None
    margin: Literal["usd-m", "coin-m"] | None = Field(
        None,
        description=(
            "futures: usd-m (REST /fapi/v1, streams split /public + /market) or coin-m "
            "(REST /dapi/v1, one connection at the base); default usd-m, on the fake exchange "
            "what it serves"
        ),
    )
    symbol: str | None = None
    ws_base: str
    rest_base: str
    fake: bool = False
    tick_size: float | None = Field(None, gt=0)
    lot_size: float | None = Field(None, gt=0)
    depth_stream: str = "depth@100ms"
    trade_stream: str | None = Field(
        None, description="default: trade on spot, aggTrade on USD-M futures (documented)"
    )
    connections: tuple[StreamRoute, ...] | None = Field(
        None,
        description=(
            "websocket connections and the streams each carries; default per market: spot and "
            "COIN-M one connection at the base, USD-M futures /public (depth) and /market (trades)"
        ),
    )
    snapshot_limit: int = Field(1000, ge=1, le=5000)
    trade_silence_s: float = Field(
        120.0, gt=0, description="warn loudly when depth flows but no trade came for this long"
    )
    reorder_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description=(
            "hold events this long past their exchange time and release them in exchange-time "
            "order (trades that arrive after the diff that consumed them); 0 = arrival order"
        ),
    )
    clock: Literal["auto", "raw"] | float = Field(
        "auto",
        description=(
            "shift added to local receive times (the venue's clock is the reference): auto = "
            "estimated from the venue's server time, raw = none, a number = that many ms"
        ),
    )
    queue_size: int = Field(10_000, ge=16)
    stale_after_s: float = Field(10.0, gt=0)
    max_connection_s: float = Field(23.5 * 3600, gt=0)
    chunk_ms: float = Field(50.0, ge=0, description="wall ms of arrivals per chunk; 0 = adaptive")
    busy_poll: bool = Field(
        False, description="spin the event loop for the lowest latency (one core at 100 %)"
    )

    @model_validator(mode="after")
    def _check(self) -> BinanceLiveFeedSpec:
        if self.connections is not None:
            for kind in ("depth", "trade"):
                n = sum(kind in c.streams for c in self.connections)
                if n != 1:
                    raise ValueError(
                        f"connections: exactly one connection must carry '{kind}', found {n}"
                    )
        if self.margin is not None and self.market == "spot":
            raise ValueError(f"margin {self.margin!r} is for a futures market, not spot")
        if self.market is not None:
            # margin left out means USD-M, except on a fake exchange (what it serves)
            margin = self.margin or (None if self.fake else "usd-m")
            err = snapshot_limit_error(self.market, self.snapshot_limit, margin)
            if err:
                raise ValueError(err)
        return self


AnySpec = SyntheticFeedSpec | FileFeedSpec | BinanceLiveFeedSpec
FeedSpec = Annotated[AnySpec, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[AnySpec] = TypeAdapter(FeedSpec)


def known_feeds() -> list[str]:
    return sorted(p.stem for p in FEEDS_DIR.glob("*.json"))


def _live_from_url(url: str) -> BinanceLiveFeedSpec:
    """``ws://127.0.0.1:P``: an mm_sim fake exchange (it tells market and symbol itself)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number in 0..65535
        port = None
    if not parts.hostname or port is None:
        raise UserError(f"feed {url!r}: expected ws://HOST:PORT (an mm_sim fake exchange)")
    if parts.path.strip("/") or parts.query or parts.fragment:
        # The fake exchange names its own market and symbol; a path such as /ETHUSDT was
        # dropped without a word and the server's symbol recorded instead.
        raise UserError(
            f"feed {url!r}: a fake exchange is ws://HOST:PORT alone (it serves one symbol and "
            f"says which); for another symbol start it with that feed, or use a definition "
            f"NAME:SYMBOL"
        )
    rest = f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.hostname}:{parts.port}"
    return BinanceLiveFeedSpec(
        kind="binance-ws",
        name=f"fake-exchange-{parts.port}",
        ws_base=f"{parts.scheme}://{parts.hostname}:{parts.port}",
        rest_base=rest,
        fake=True,
    )


def resolve_feed(name_or_path: str | os.PathLike[str]) -> AnySpec:
    s = str(name_or_path)
    if not s.strip():
        raise UserError(
            "an empty feed name: expected a feed .npy, a definition .json, a name from feeds/ "
            f"({', '.join(known_feeds())}) or a ws:// URL"
        )
    if s.startswith(("ws://", "wss://")):
        return _live_from_url(s)
    symbol: str | None = None
    name, colon, sym = s.partition(":")
    if colon and sym and ((FEEDS_DIR / f"{name}.json").exists() or name.endswith(".json")):
        s, symbol = name, sym
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
    if "kind" not in data and definition.with_suffix(".npy").exists():  # a feed's sidecar
        npy = definition.with_suffix(".npy")
        raise UserError(f"{definition}: this looks like the sidecar of {npy}: pass the .npy")
    data.setdefault("name", definition.stem)
    try:
        spec = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        errs = "; ".join(
            f"field '{'.'.join(map(str, e['loc']))}' = {e.get('input')!r}: {e['msg']}"
            if e["loc"][1:]
            else e["msg"]
            for e in exc.errors()
        )
        raise UserError(f"{definition}: invalid feed definition: {errs}") from None
    if isinstance(spec, FileFeedSpec) and not Path(spec.path).is_absolute():
        spec = spec.model_copy(update={"path": str((definition.parent / spec.path).resolve())})
    if symbol is not None:
        if not isinstance(spec, BinanceLiveFeedSpec):
            raise UserError(f"feed {s!r}: NAME:SYMBOL only applies to live (binance-ws) feeds")
        spec = spec.model_copy(update={"symbol": symbol.upper()})
    return spec


def replay_clock(spec: SyntheticFeedSpec | FileFeedSpec, setting: str) -> AppliedClock:
    """The clock shift a replay of ``spec`` applies under ``--clock setting`` (docs/FEEDS.md):
    a stored feed's own model, exact clocks for a generated one."""
    if isinstance(spec, FileFeedSpec):
        return choose_clock(setting, model_of(open_feed(spec.path)))
    return choose_clock(setting, GENERATED)


def load_events(
    spec: SyntheticFeedSpec | FileFeedSpec | BinanceLiveFeedSpec, seed: int
) -> tuple[np.ndarray, Instrument, dict[str, Any]]:
    """Events (memory-mapped for files), instrument and a feed identity for run records."""
    if isinstance(spec, BinanceLiveFeedSpec):
        raise UserError(
            f"feed {spec.name!r} is live: it has no stored events (record it first with "
            "`mm_sim record`)"
        )
    if isinstance(spec, FileFeedSpec):
        feed = open_feed(spec.path, check=True)  # a replay: refuse garbage (feeds/validate.py)
        identity = {"kind": "file", "path": str(feed.path), "count": len(feed.events)}
        return feed.events, feed.instrument, identity
    from mm_sim.feeds.synthetic import SyntheticParams
    from mm_sim.feeds.synthetic_cache import generate_cached

    try:
        params = SyntheticParams(**spec.params)
    except ValidationError as exc:
        errs = "; ".join(
            f"params.{'.'.join(map(str, e['loc']))} = {e.get('input')!r}: {e['msg']}"
            for e in exc.errors()
        )
        raise UserError(f"feed {spec.name!r}: invalid synthetic parameters: {errs}") from None
    check_synthetic_duration(spec, repr(spec.name))
    # generated once per definition, seed and duration, then read back (docs/SYNTHETIC.md)
    events, instrument = generate_cached(params, seed, spec.duration_s)
    identity = {
        "kind": "synthetic",
        "name": spec.name,
        "params": params.model_dump(),
        "duration_s": spec.duration_s,
        "seed": seed,
        "count": len(events),
    }
    return events, instrument, identity
