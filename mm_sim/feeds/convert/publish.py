"""One conversion published as one unit: staged under a hidden name, checked (bad-line share,
a book to replay), then renamed into place, data first and sidecar last.

Why a module of its own: the ``convert`` command and the parallel runner's Dask tasks publish
the same way, so a feed is never half written, never replaces something that is not a feed, and
a killed conversion's leftovers are cleaned by the next one to the same name.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from mm_sim.errors import UserError
from mm_sim.events import EVENT_DTYPE, hold_lock, open_feed, read_sidecar, sidecar_path
from mm_sim.feeds.convert import FORMATS
from mm_sim.feeds.convert.base import TRUNCATED, BadLines, ConvertOptions, ConvertResult
from mm_sim.feeds.progress import read_bar

# Above this share of skipped lines a non-strict conversion is refused unless
# --allow-bad-lines: a feed missing that much of its input is not the market it claims to be.
BAD_SHARE_LIMIT = 0.01
# Above this share of the events without a book (a tail cut after a reset no snapshot
# follows) or of the depth updates dropped on a synced book (it froze), refused unless
# --allow-book-loss: the feed would replay a much shorter or stiller market than recorded.
BOOK_LOSS_LIMIT = 0.01


def publish(
    fmt: str,
    inputs: list[Path],
    target: Path,
    opts: ConvertOptions,
    allow_bad_lines: bool = False,
    force: bool = False,
    bar_out: TextIO | None = None,
    allow_book_loss: bool = False,
) -> tuple[ConvertResult, dict[str, Any]]:
    """Convert ``inputs`` to ``target`` (.npy) and its sidecar; (result, JSON summary).
    ``bar_out``: where a progress bar goes when it is a terminal (None: no bar)."""
    module = importlib.import_module(FORMATS[fmt])
    # Held until the renames: two converts to one OUT both passed check_replace, both said
    # "wrote", and the later rename silently replaced the other's feed.
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # as FeedWriter would
    except OSError as exc:
        raise UserError(f"{target.parent}: cannot create ({exc.strerror or exc})") from exc
    lock_path = target.with_name(f".{target.name}.lock")
    busy = (
        f"{target}: another convert is writing this feed now; wait for it to finish (or choose "
        "another -o)"
    )
    lock = hold_lock(lock_path, busy)
    try:
        # The holder removes the file when done, so a lock taken on a file already removed
        # (opened just before) guards nothing: refuse as busy rather than race a third convert.
        if os.fstat(lock.fileno()).st_ino != os.stat(lock_path).st_ino:
            raise UserError(busy)
    except FileNotFoundError:
        lock.close()
        raise UserError(busy) from None
    except UserError:
        lock.close()
        raise
    try:
        return _publish(
            module, inputs, target, opts, allow_bad_lines, force, bar_out, allow_book_loss
        )
    finally:
        lock_path.unlink(missing_ok=True)
        lock.close()


def _publish(
    module: Any,
    inputs: list[Path],
    target: Path,
    opts: ConvertOptions,
    allow_bad_lines: bool,
    force: bool,
    bar_out: TextIO | None,
    allow_book_loss: bool,
) -> tuple[ConvertResult, dict[str, Any]]:
    check_replace(target, force)
    clean_stale_stages(target)
    stage = target.with_name(f".{target.stem}.converting-{os.getpid()}.npy")
    try:
        if bar_out is not None:
            with read_bar(inputs, f"convert {target.name}", bar_out):
                result = module.convert(inputs, stage, opts)
        else:
            result = module.convert(inputs, stage, opts)
        check_bad_share(result, allow_bad_lines)
        check_stale(result, allow_book_loss)
        cut = check_book(stage, opts.strict, str(target), allow_book_loss, result.stats)
        if cut:  # what the summary reports is what was written
            result.events = cut["at_event"]
            result.stats = restate(result.stats, open_feed(stage, verify=False, check=False).events)
        # One unit: the sidecar names its data's size and hash, so a crash between the two
        # renames leaves a pair that open_feed refuses, never a valid-looking mix.
        os.replace(stage, target)
        os.replace(sidecar_path(stage), sidecar_path(target))
    finally:
        for leftover in (stage, sidecar_path(stage)):
            leftover.unlink(missing_ok=True)
    result.out = target
    if cut:
        result.stats["book_less_tail_cut"] = cut
    summary = {
        "out": str(result.out),
        "events": result.events,
        "lines": result.lines,
        "bad_lines": {**result.bad_lines.to_json(), "share": bad_share(result)},
        "warnings": result.warnings,
        **result.stats,
        "clock": open_feed(result.out).meta.clock,  # the sidecar's clock model (docs/FEEDS.md)
    }
    return result, summary


def bad_share(result: ConvertResult) -> float:
    return result.bad_lines.total / result.lines if result.lines else 0.0


def check_bad_share(result: ConvertResult, allowed: bool) -> None:
    """Refuse (nothing written) a conversion that skipped more than BAD_SHARE_LIMIT of its
    lines, unless the user said that is fine."""
    share = bad_share(result)
    if allowed:
        return
    cut = result.bad_lines.examples.get(TRUNCATED)
    if cut:
        # One "bad line" stands for however much of the file was never read: a share of lines
        # cannot say how much was lost, so a cut file is refused whatever the share.
        raise UserError(
            f"{cut[0]}: truncated or corrupt compressed data, the rest of the file was not "
            "read; nothing written (pass --allow-bad-lines to publish what precedes the cut)"
        )
    if share <= BAD_SHARE_LIMIT:
        return
    raise UserError(
        f"{result.bad_lines.total:,} of {result.lines:,} lines ({share:.2%}) were bad and "
        f"skipped, more than {BAD_SHARE_LIMIT:.0%}: {_reasons(result.bad_lines)}; nothing "
        "written (pass --allow-bad-lines to publish anyway, or --strict to stop at the first)"
    )


def check_stale(result: ConvertResult, allowed: bool) -> None:
    """Depth updates dropped as already applied while the book was in sync (Binance): the
    venue never resends one, so they mean a corrupt update id froze the book. A few are
    reported as a warning; more than BOOK_LOSS_LIMIT of the updates refuse the feed."""
    stale = int(result.stats.get("dropped_stale_in_sync", 0))
    if not stale:
        return
    updates = int(result.stats.get("messages", {}).get("depthUpdate", 0)) or stale
    first = (result.stats.get("stale_in_sync_examples") or ["?"])[0]
    what = (
        f"{stale:,} of {updates:,} depth updates ({stale / updates:.2%}) were dropped as already "
        f"applied although the book was in sync (first: {first}): an update id jumped ahead "
        "and the book froze"
    )
    if allowed or stale <= BOOK_LOSS_LIMIT * updates:
        result.warnings.append(what)
        return
    raise UserError(f"{what}; nothing written (pass --allow-book-loss to publish anyway)")


def restate(stats: dict[str, Any], events: np.ndarray) -> dict[str, Any]:
    """The converter's figures that describe the written events, recounted on ``events`` after
    the tail was cut (they were counted before it)."""
    from mm_sim.events import KIND_DEPTH, KIND_NAMES, KIND_TRADE
    from mm_sim.feeds.convert.binance_inputs import iso

    out = dict(stats)
    kinds = np.asarray(events["kind"])
    by_kind = {KIND_NAMES[k]: int(np.count_nonzero(kinds == k)) for k in sorted(KIND_NAMES)}
    if isinstance(out.get("events"), dict):
        out["events"] = by_kind
    if isinstance(out.get("events_by_kind"), dict):
        out["events_by_kind"] = {k: n for k, n in by_kind.items() if n}
    market = np.isin(kinds, (KIND_DEPTH, KIND_TRADE))
    if "last_exch_ts_ns" in out and market.any():
        ts = np.asarray(events["exch_ts"])[market]
        lo, hi = int(ts.min()), int(ts.max())
        out.update(first_exch_ts=iso(lo), last_exch_ts=iso(hi))
        out.update(first_exch_ts_ns=lo, last_exch_ts_ns=hi)
    return out


def _reasons(bad: BadLines) -> str:
    parts = []
    for reason, n in bad.counts.most_common(3):
        where = ", ".join(bad.examples.get(reason, [])[:2])
        parts.append(f"{n:,} x {reason} (e.g. {where})")
    return "; ".join(parts)


def check_replace(target: Path, force: bool) -> None:
    """An existing OUT is replaced only with --force, and only when it is a feed of ours."""
    side = sidecar_path(target)
    existing = [p for p in (target, side) if p.exists() or p.is_symlink()]
    if not existing:
        return
    if not force:
        raise UserError(f"{existing[0]}: already exists; pass --force to replace that feed")
    for p in existing:
        if not p.is_file():
            raise UserError(f"{p}: exists and is not a file; not replacing it")
    if target.exists():
        try:
            arr = np.load(target, mmap_mode="r")
            ours = arr.dtype == EVENT_DTYPE
        except (ValueError, OSError, EOFError):
            ours = False
        if not ours:
            raise UserError(f"{target}: exists and is not an mm_sim feed; not replacing it")
    if side.exists():
        try:
            meta = json.loads(side.read_bytes())
            ours = isinstance(meta, dict) and isinstance(meta.get("instrument"), dict)
        except ValueError:
            ours = False
        if not ours:
            raise UserError(f"{side}: exists and is not an mm_sim feed sidecar; not replacing it")


def clean_stale_stages(target: Path) -> None:
    """Remove what a killed convert to the same OUT left (its process is gone)."""
    for p in target.parent.glob(f".{target.stem}.converting-*"):
        pid = p.name.rsplit("converting-", 1)[-1].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def check_book(
    stage: Path,
    strict: bool,
    name: str = "",
    allow_loss: bool = False,
    conv_stats: dict[str, Any] | None = None,
) -> dict[str, int] | None:
    """Refuse a converted feed with no book; cut (or refuse) a book-less tail.

    A feed without any snapshot has no book to quote against. A book reset (update-id gap)
    with no snapshot after it leaves the rest of the feed without a book: those events are
    cut (and reported) so a soak never quotes into nothing. A cut of more than
    BOOK_LOSS_LIMIT of the events is refused unless ``allow_loss``: one bad diff line in a
    capture with a single snapshot used to publish 3 % of it with exit 0 and a note.
    ``--strict`` refuses any cut. ``conv_stats``: the converter's, for where the sync broke.
    """
    from mm_sim.events import write_feed
    from mm_sim.feeds.validate import book_less_tail, check_events, has_snapshot

    feed = open_feed(stage, verify=False, check=False)
    events = feed.events
    if not has_snapshot(events):
        raise UserError(
            f"{name or feed.path.name}: the converted data holds no book snapshot, so the feed "
            "would have no book (give the snapshot file with the stream); nothing written"
        )
    bad = [f for f in check_events(events) if f.fatal]
    if bad:
        raise UserError(
            "the converted feed cannot be replayed: "
            + "; ".join(f.message() for f in bad)
            + "; nothing written"
        )
    tail = book_less_tail(events)
    if tail is None:
        return None
    lost = len(events) - tail
    ts = int(events["exch_ts"][tail])
    if strict:
        raise UserError(
            f"--strict: a book reset at event #{tail} (exch_ts {ts}) is followed by no snapshot: "
            f"the last {lost:,} events have no book; nothing written"
        )
    if not allow_loss and lost > BOOK_LOSS_LIMIT * len(events):
        from mm_sim.feeds.convert.binance_inputs import iso

        gap = (conv_stats or {}).get("last_gap")
        raise UserError(
            f"{name or feed.path.name}: the book is lost at event #{tail:,} of {len(events):,} "
            f"({iso(ts)}) and no snapshot follows"
            + (f" (it broke at {gap})" if gap else "")
            + f": the last {lost:,} events ({lost / len(events):.0%}) would be cut; nothing "
            f"written (pass --allow-book-loss to publish the {tail:,} events before it)"
        )
    cut = {"at_event": tail, "exch_ts": ts, "events": lost}
    kept = np.array(events[:tail])
    stats = restate({**feed.meta.stats, "book_less_tail_cut": cut}, kept)
    del feed, events
    write_feed(stage, kept, read_sidecar(stage).instrument, read_sidecar(stage).source, stats)
    print(
        f"note: a book reset at event #{tail} is followed by no snapshot; the {lost:,} "
        "book-less events after it were cut (use --strict to refuse instead)",
        file=sys.stderr,
    )
    return cut
