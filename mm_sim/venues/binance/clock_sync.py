"""How far the local clock is off the venue's, from its server-time endpoint.

Why: every live event carries two stamps, the venue's event time and our receive time. If the
local clock runs behind the venue's, messages look received before they were sent and every
latency measured from them is wrong, exactly as with a recorded feed (``mm_sim/feeds/clock.py``).
The convention is the one replay uses: the correction is a shift ADDED TO ``local_ts`` (the
exchange clock is the reference), so live events, a recording's sidecar and a replay of it all
mean the same thing by it.

The estimate is the classic two-way one: ask ``serverTime`` between two local readings ``t0``
and ``t1``; the server read its clock somewhere in between, so ``offset = server - (t0+t1)/2``
with an error of at most half the round trip (plus the millisecond the server truncates). Of
several requests the one with the shortest round trip is kept. Unlike one-way event lags, this
can tell a local clock running *ahead* of the venue (a negative shift).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from mm_sim.logs import get_logger
from mm_sim.venues.binance.messages import MessageError, decode

log = get_logger("mm_sim.live")

_MS = 1_000_000
SAMPLES = 5


@dataclass(frozen=True)
class ServerOffset:
    """Venue clock minus local clock (ns) and the bound on its error."""

    offset_ns: int
    uncertainty_ns: int
    rtt_ns: int
    samples: int

    def to_json(self) -> dict[str, Any]:
        return {
            "server_offset_ms": round(self.offset_ns / 1e6, 3),
            "server_uncertainty_ms": round(self.uncertainty_ns / 1e6, 3),
            "server_rtt_ms": round(self.rtt_ns / 1e6, 3),
            "server_samples": self.samples,
        }


def best_offset(samples: list[tuple[int, int, int]]) -> ServerOffset | None:
    """From ``(t0, server_ms, t1)`` readings (local ns, venue ms, local ns): the reading with
    the shortest round trip. The venue's ms is taken at its middle (it truncates)."""
    good = [(t1 - t0, t0, s, t1) for t0, s, t1 in samples if t1 >= t0]
    if not good:
        return None
    rtt, t0, server_ms, t1 = min(good)
    offset = server_ms * _MS + _MS // 2 - (t0 + t1) // 2
    return ServerOffset(offset, rtt // 2 + _MS // 2, rtt, len(good))


async def measure(
    session: aiohttp.ClientSession,
    url: str,
    clock: Callable[[], int],
    n: int = SAMPLES,
    quiet: bool = False,
) -> ServerOffset | None:
    """``n`` server-time requests to ``url``; None (and, unless ``quiet``, a warning) when
    none answered. With ``quiet`` (a venue that may be down) the first request that fails to
    connect ends the attempt: five timeouts in a row would hold a reconnect up for minutes."""
    samples: list[tuple[int, int, int]] = []
    for _ in range(n):
        try:
            t0 = clock()
            async with session.get(url) as resp:
                body = await resp.read()
            t1 = clock()
            if resp.status != 200:
                continue
            server = decode(body)[0].get("serverTime")
        except (aiohttp.ClientError, TimeoutError) as exc:
            if quiet and not isinstance(exc, aiohttp.ClientResponseError):
                break
            continue
        except (MessageError, AttributeError):
            continue
        if isinstance(server, int) and not isinstance(server, bool):
            samples.append((t0, server, t1))
        await asyncio.sleep(0)
    est = best_offset(samples)
    if est is None and not quiet:
        log.warning("venue server time unavailable: clock offset not estimated", url=url)
    return est


def chosen_shift(mode: str | float, est: ServerOffset | None) -> tuple[int, str]:
    """The shift added to local receive times, and how it was chosen.

    ``auto``: the server estimate when it is larger than its own error bound, else 0 (the
    clocks agree as far as we can tell); ``raw``: 0; a number: that many milliseconds.
    """
    if isinstance(mode, int | float) and not isinstance(mode, bool):
        return round(float(mode) * _MS), "manual"
    if mode == "raw":
        return 0, "raw"
    if est is None:
        return 0, "auto: no server time"
    if abs(est.offset_ns) <= est.uncertainty_ns:
        return 0, "auto: within the estimate's error"
    return est.offset_ns, "auto: server time"


__all__ = ["ServerOffset", "best_offset", "chosen_shift", "measure"]
