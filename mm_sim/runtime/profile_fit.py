"""Whether a profile can quote on a feed at all, checked before a run starts.

Why a module of its own: the profile alone does not know the feed's tick or prices, so the
check needs both, and every program that runs a profile on a feed (``soak`` replayed or live,
each cell of a ``sweep``, each day of ``validate tuner``) must refuse the same things with the
same words. A profile that cannot quote does
not fail: it runs, never fills, and reports a verdict on nothing.
"""

from __future__ import annotations

import numpy as np

from mm_sim.config import Profile
from mm_sim.errors import UserError
from mm_sim.events import Instrument

# How far a profile's tick may be from the feed's own, either way: 100x coarser is a venue that
# changed its tick; beyond that (1e6 on a 0.1 feed, 1e-12) it is a unit slip, and the run gave a
# verdict on 0 fills (or on NaN edge when prices fell off the engine's grid).
TICK_FACTOR = 100.0


def check_profile_fits(
    where: str, profile: Profile, feed: Instrument, used: Instrument, events: np.ndarray
) -> list[str]:
    """Refuse what makes quoting impossible on this feed; the notes on a size of the profile's
    that replaces the feed's (``used`` is ``profile.instrument_for(feed)``)."""
    check_tick(where, feed, used)
    check_notional(where, profile, used, events)
    return size_notes(feed, used)


def check_tick(where: str, feed: Instrument, used: Instrument) -> None:
    ratio = used.tick_size / feed.tick_size
    if not 1 / TICK_FACTOR <= ratio <= TICK_FACTOR:
        raise UserError(
            f"profile {where}: instrument.tick_size {used.tick_size:g} is {ratio:.3g}x the "
            f"feed's own {feed.tick_size:g}, more than {TICK_FACTOR:g}x either way: the feed's "
            "prices do not fit that grid (a unit slip?); set a tick within that range, or null "
            "to use the feed's"
        )


def check_notional(where: str, profile: Profile, used: Instrument, events: np.ndarray) -> None:
    """An order the inventory limit refuses whatever the position: the feed's first prices (or
    an inverse contract's size) say what one order is worth."""
    prices = events["price"][: 1 << 16]
    prices = prices[prices > 0]
    unit = used.contract_size if used.inverse else (float(np.median(prices)) if len(prices) else 0)
    q, inv = profile.quoting, profile.inventory
    if unit and q.order_qty * unit > inv.max_notional:
        per = "contract size" if used.inverse else "price"
        raise UserError(
            f"profile {where}: quoting.order_qty {q.order_qty:g} is worth "
            f"{q.order_qty * unit:,.6g} at this feed's {per} {unit:,.6g}, above "
            f"inventory.max_notional {inv.max_notional:g}: every order would "
            "breach the notional limit, so the strategy could never quote"
        )


def size_notes(feed: Instrument, used: Instrument) -> list[str]:
    """A profile size in place of the feed's changes every reported number: said, not silent."""
    notes = []
    for name, what in (("tick_size", "the feed's prices"), ("lot_size", "order sizes")):
        feed_v, v = getattr(feed, name), getattr(used, name)
        if v != feed_v:
            notes.append(
                f"note: the profile's instrument.{name} {v:g} replaces the feed's {feed_v:g} "
                f"({v / feed_v:,.6g}x): {what} are rounded to it"
            )
    return notes
