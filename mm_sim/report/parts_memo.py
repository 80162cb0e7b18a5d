"""Each committed iteration's evaluated parts, kept between report rebuilds.

Why: the soak rebuilds every report after each committed iteration (so that a killed soak
leaves current reports), and each rebuild evaluated every committed iteration of the primary
and of every model arm again, O(iterations^2 x arms): 15 % of the default soak. A committed
iteration's records never change, so its ``iteration_parts`` are kept, keyed by a hash of
everything that function reads (the four record arrays, the start state and the slice's
scalars). A key that matches is the same input, so the reports are the same bytes; a record
file rewritten under the same run directory simply misses.

An iteration's own section is kept the same way (``iteration_sections``), keyed by its slice and
the gates: the runner evaluates it when the iteration ends, and each rebuild showed it again
(in a sweep cell, two of every five sections a run computed).

The kept parts are shared between rebuilds, so their arrays are made read-only: a caller that
wrote into one would fail loudly instead of changing a later report.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
import xxhash

from mm_sim.config import VenueRuleGates
from mm_sim.report.edge import Parts, Slice, iteration_parts, section
from mm_sim.report.schema import EdgeSection

# Iterations kept (least recently used go first): a soak of 6 iterations x 5 arms needs 30;
# a sweep worker's runs each need their own few.
MAX_KEPT = 256

_KEPT: OrderedDict[bytes, Parts] = OrderedDict()
# An iteration's own section, by (its slice key, the gates it was evaluated against): the
# runner evaluates it when the iteration ends and every later report rebuild shows it again.
_SECTIONS: OrderedDict[tuple[bytes, float, str], EdgeSection] = OrderedDict()


def slice_key(sl: Slice) -> bytes:
    """A digest of every input of ``iteration_parts(sl)``."""
    # XXH3-128 for speed (memory speed, ~13x SHA-1 here; a memo key needs no collision
    # resistance against an adversary), over the arrays' own buffers: no copy of the records
    h = xxhash.xxh3_128()
    for a in (sl.fills, sl.actions, sl.blocks, sl.marks):
        h.update(f"{a.dtype.descr}:{a.shape}".encode())
        h.update(a.data if a.flags.c_contiguous else a.tobytes())
    # repr of a float is exact (it reads back as the same number)
    h.update(
        repr(
            (sl.iteration, sl.start, sl.ws_lag_p95_ms, sl.post_only_rejected, sl.contract_size)
        ).encode()
    )
    return h.digest()


def _freeze(p: Parts) -> None:
    for v in vars(p).values():
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
        elif isinstance(v, dict):
            for a in v.values():
                if isinstance(a, np.ndarray):
                    a.flags.writeable = False


def keyed_parts(slices: Iterable[Slice]) -> list[tuple[bytes, Parts]]:
    """``(slice_key(sl), iteration_parts(sl))`` per slice, evaluating only slices not seen
    before."""
    out: list[tuple[bytes, Parts]] = []
    for sl in slices:
        key = slice_key(sl)
        p = _KEPT.get(key)
        if p is None:
            p = iteration_parts(sl)
            _freeze(p)
            _KEPT[key] = p
            if len(_KEPT) > MAX_KEPT:
                _KEPT.popitem(last=False)
        else:
            _KEPT.move_to_end(key)
        out.append((key, p))
    return out


def parts_of(slices: Iterable[Slice]) -> list[Parts]:
    """``[iteration_parts(sl) for sl in slices]``, evaluating only slices not seen before."""
    return [p for _, p in keyed_parts(slices)]


def iteration_sections(
    keyed: Iterable[tuple[bytes, Parts]],
    adverse_threshold_bps: float,
    rules: VenueRuleGates | None = None,
) -> list[EdgeSection]:
    """``section([p], p.iteration, ...)`` of each ``keyed_parts`` entry, evaluated once per
    (slice, gates); each caller gets its own copy (sections are mutable models)."""
    rules = rules if rules is not None else VenueRuleGates()
    gates_key = rules.model_dump_json()
    out: list[EdgeSection] = []
    for key, p in keyed:
        mkey = (key, adverse_threshold_bps, gates_key)
        sec = _SECTIONS.get(mkey)
        if sec is None:
            sec = section([p], p.iteration, adverse_threshold_bps, rules)
            _SECTIONS[mkey] = sec
            if len(_SECTIONS) > MAX_KEPT:
                _SECTIONS.popitem(last=False)
        else:
            _SECTIONS.move_to_end(mkey)
        out.append(sec.model_copy(deep=True))
    return out
