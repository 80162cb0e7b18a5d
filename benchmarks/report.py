"""``make bench``'s results read against the issues' targets, and written out as tables.

``targets`` lists each target with what was measured and met / not met (reported, never
asserted); ``markdown`` renders the whole result as latest.md. Split from run.py, which
measures.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks import convert_bench, soak_profile

# The live-path bench's two runs: result key, label in tables, label in the targets.
LIVE_RUNS = (
    ("live_latency", "busy-poll", "busy-poll"),
    ("live_latency_sleeping", "sleeping", "sleeping loop"),
)


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets next to what was measured (reported, never asserted)."""
    rows: list[dict[str, Any]] = []

    def add(name: str, target: str, value: Any, met: bool | None, note: str = "") -> None:
        rows.append({"target": name, "goal": target, "measured": value, "met": met, "note": note})

    syn = res["throughput"]["synthetic"]
    add("core events/s, synthetic", ">= 10,000,000", syn["events_per_s"],
        syn["events_per_s"] >= 10e6)  # fmt: skip
    bf = res.get("before", {})
    for name, b in bf.get("feeds", {}).items():
        add(f"two clocks vs the one-cursor core before them ({bf['commit']}), {name}", ">= 0.85",
            b["ratio"], b["ratio"] >= 0.85,
            f"ns/event {b['before_ns_per_event']:.1f} before, {b['now_ns_per_event']:.1f} now, "
            "same events")  # fmt: skip
    for name, t in res["throughput"].items():
        if "x_one_cursor" in t:
            add(f"two clocks vs one cursor, {name}", ">= 0.85", t["x_one_cursor"],
                t["x_one_cursor"] >= 0.85,
                "events/s of the exchange-order core ÷ the same feed on one cursor")  # fmt: skip
    st = res["stages"]
    qm = st.get("quote_match_ns_per_event", {})
    if "p99" in qm:
        add("quote+match p99", "<= 1000 ns", qm["p99"], qm["p99"] <= 1000.0,
            "per-event mean within 1,024-event batches (engine minus book-only)")  # fmt: skip
    warm = res["soak"].get("warm", {})
    full_soak = res["mode"] == "full"
    if "wall_s" in warm:
        met = warm["wall_s"] <= 30.0 if full_soak else None
        note = "" if full_soak else "reduced soak in this mode: not the target run"
        add("default soak warm", "<= 30 s", warm["wall_s"], met, note)
    if "events_per_s" in warm:
        # Issue 17: the soak as a user waits for it, no slower than the kernel it feeds.
        eps = warm["events_per_s"]
        add("default soak warm, end to end", ">= 5,000,000 events/s", eps,
            eps >= 5e6 if full_soak else None,
            f"{warm['events']:,} events in {warm['wall_s']:.2f} s; where the time goes: "
            "'Where the soak's time goes' below" if full_soak else note)  # fmt: skip
    cold_first = res.get("compile", {}).get("cold", {})
    if "first_run_s" in cold_first:
        add("first run on an empty kernel cache", "<= 10 s", cold_first["first_run_s"],
            cold_first["first_run_s"] <= 10.0,
            "the first Engine.run compiles every kernel (the soak says so meanwhile); "
            "make setup compiles them beside pip's install (kernel_warmup)")  # fmt: skip
    ls = res["scaling"]["length"]
    if "flat_rss" in ls:
        add("flat RSS with feed length", "peak RSS at largest <= 1.10 x smallest + 16 MB",
            ls["rss_ratio"], ls["flat_rss"])  # fmt: skip
    sw = res.get("sweep", {})
    if "run_vs_bare" in sw:
        pr = sw["per_run"]
        add("one sweep run vs bare Engine.run", "<= 1.3x", sw["run_vs_bare"], sw["run_met"],
            f"wall, side by side: {pr['run_wall_s'] * 1e3:.0f} ms vs {pr['bare_wall_s'] * 1e3:.0f}"
            f" ms ({pr['events_per_run']:,} events); CPU {pr['run_vs_bare_cpu']:.2f}x; a "
            f"worker's first run on a feed {pr['cold_run_vs_bare_wall']:.2f}x")  # fmt: skip
    if "speedup_2_vs_1" in sw:
        w1, w2 = sw["workers_1"], sw["workers_2"]
        add("sweep speed-up, 2 vs 1 workers", ">= 1.8", sw["speedup_2_vs_1"], sw["speedup_met"],
            f"{w1['cells_per_min']:.1f} -> {w2['cells_per_min']:.1f} cells/min; CPU per run "
            f"x{sw['cpu_per_run_2_vs_1']:.2f} with 2; other processes kept "
            f"{w2['others_cores']:.2f} of {sw['cpus']} cores busy; load "
            f"{sw['loadavg_at_start'][0]:.2f}; issue 8's >= 1.7 "
            f"{'met' if sw['speedup_2_vs_1'] >= 1.7 else 'not met'}")  # fmt: skip
    peer_targets(res.get("peer", {}), add)
    for row in convert_bench.targets(res.get("conversion", {})):
        add(row["name"], row["target"], row["value"], row["met"], row["note"])
    for key, _, label in LIVE_RUNS:
        lv = res.get(key, {})
        name = f"live arrival -> decision p99 ({label})"
        # The target is the client as a latency-sensitive user runs it (busy-poll); the
        # sleeping loop is shown beside it, judged against the same figure.
        if "latency_us" in lv:
            add(name, "<= 200 µs at 5,000 msg/s", lv["latency_us"]["p99"], lv["met"],
                f"{lv['msgs_per_s']:,.0f} msg/s; p50 {lv['latency_us']['p50']:.0f} µs; "
                f"p99.9 {lv['latency_us']['p99_9']:.0f} µs; client CPU "
                f"{lv['client_cpu_us_per_msg']:.0f} µs/msg")  # fmt: skip
        elif key in res:
            add(name, "<= 200 µs at 5,000 msg/s", None, None, lv.get("error", "not measured"))
    return rows


def peer_targets(peer: dict[str, Any], add: Any) -> None:
    """The peer's two targets, each scored on every compared run (every feed, scenario and
    queue model): met means met on all of them, and a run that could not be compared counts
    against (``benchmarks.peer.agreement``)."""
    ag = peer.get("agreement")
    if "ratio_events_per_s" not in peer or not ag:
        why = str(peer.get("peer") or peer.get("error") or "no compared run")
        add("mm_sim / hftbacktest events/s", ">= 3 on every run", None, None, why)
        return
    n = ag["runs"]
    lost = len(ag["not_compared"])
    tail = f"; {lost} run(s) not compared" if lost else ""
    sp = ag["events_per_s_ratio"]
    # Issue 17's goal (an earlier issue asked >= 2): the kernel 3x hftbacktest on every run.
    add("mm_sim / hftbacktest events/s", ">= 3 on every run", sp["min"],
        sp["min"] >= 3.0 and not lost,
        f"lowest of {n} runs: {sp['min_run']}; headline {peer['ratio_events_per_s']:.2f}, "
        f"highest {sp['max']:.2f}{tail}")  # fmt: skip
    arms = ag.get("arms", {})
    arm_labels = (
        ("hbt_rules", "mm_sim with hftbacktest's fill rules"),
        ("default", "mm_sim with its default fill rules (model error, no target)"),
    )
    for arm, label in arm_labels:
        if arm not in arms:
            continue
        a = arms[arm]
        fl, fq = a["fills"], a["fill_qty"]
        add(f"fill counts and quantity agree: {label}",
            "mm_sim / hftbacktest within 10 % on every run" if arm == "hbt_rules" else "-",
            f"{a['fills_and_qty_within']} of {n} runs",
            a["met"] if arm == "hbt_rules" else None,
            f"worst fills: {fl['worst_run']}, {fl['worst_mm_sim']:,} / {fl['worst_hftbacktest']:,}"
            f" ({fmt(fl['worst_ratio'], 3)}); worst qty: {fq['worst_run']}, "
            f"{fq['worst_mm_sim']:,.3f} / {fq['worst_hftbacktest']:,.3f} "
            f"({fmt(fq['worst_ratio'], 3)}){tail}")  # fmt: skip


def _before_markdown(bf: dict[str, Any] | None) -> list[str]:
    """The table of ``benchmarks.before``: the core before two clocks against this one."""
    if not bf:
        return []
    title = f"## Two clocks against the one-cursor core before them ({bf['commit']})"
    if "feeds" not in bf:
        return ["", title, "", f"Not measured: {bf.get('skipped') or bf.get('error')}"]
    L = [
        "", title, "",
        f"Same events, `benchmarks/before_worker.py` in each tree, fastest of {bf['repeats']} "
        f"runs (a small feed's repeated until {bf.get('min_timed_s', 0)} s was timed) over "
        f"{bf['rounds']} alternating rounds (target: now >= 0.85 of before's events/s).", "",
        "| feed | events | before ns/event | now ns/event | now ÷ before (events/s) |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for name, b in bf["feeds"].items():
        L.append(
            f"| {name} | {fmt(b['events'])} | {b['before_ns_per_event']:.1f} | "
            f"{b['now_ns_per_event']:.1f} | {b['ratio']:.2f} |"
        )
    return L


def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "nan"
        if abs(x) >= 1e6:
            return f"{x / 1e6:,.2f} M"
        return f"{x:,.{digits}f}"
    return str(x)


def peer_markdown(peer: dict[str, Any]) -> list[str]:
    """The peer table and the notes a reader needs to judge it (what was done to the feeds,
    where the queue model had no effect, how far the two action logs agree)."""
    if "ratio_events_per_s" not in peer:
        return [str(peer.get("peer", peer.get("error", "")))]
    v = peer["versions"]
    L = [
        f"Cadence: {peer['cadence']}. Changed in both: {peer['changes'][peer['scenario']]}. "
        f"hftbacktest {v['hftbacktest']}, numpy {v['numpy']}, numba {v['numba']}, one "
        f"process; bot-loop compile {peer['hftbacktest_compile_s']:.1f} s (not cacheable).",
        "",
        "Each cell is mm_sim / hftbacktest. Fills count every partial fill; orders = distinct "
        "orders with at least one fill; actions: identical leading actions (time, side, action, "
        "price), then the share of distinct actions found in both logs.",
        "",
        "| feed | scenario | queue | mm_sim ev/s | hftbacktest ev/s | ratio | decisions | fills "
        "| orders | fill qty | PnL (quote) | actions |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    feeds = [peer, *peer.get("other_feeds", [])]
    for f in feeds:
        for r in f.get("runs", []):
            if "error" in r:
                L.append(f"| {f['feed']} | {r['scenario']} | {r['queue_model']} | error: "
                         f"{r['error'][:80]} | | | | | | | | |")  # fmt: skip
                continue
            m, h = r["mm_sim"], r["hftbacktest"]
            q = r["queue_models"]
            xm = "" if h["exchange_model"] == "PartialFillExchange" else " (no partial fills)"
            a = r["actions"]
            L.append(
                f"| {f['feed']} | {r['scenario']} | {q['mm_sim']} / {q['hftbacktest']}{xm} | "
                f"{fmt(m['events_per_s'])} | {fmt(h['events_per_s'])} | "
                f"{fmt(r['ratio_events_per_s'], 2)} | {m['decisions']:,} / {h['decisions']:,} | "
                f"{m['fills']:,} / {h['fills']:,} | "
                f"{m['orders_filled']:,} / {h['orders_filled']:,} | "
                f"{m['fill_qty']:.3f} / {h['fill_qty']:.3f} | "
                f"{m['pnl_quote']:.2f} / {h['pnl_quote']:.2f} | "
                f"{a['identical_prefix']:,}; {a['common_share']:.0%} |"
            )
    L += ["", *_fill_table(feeds)]
    L += ["", "Feeds, as given to both simulators:", ""]
    for f in feeds:
        if "deletions_first" not in f:
            L.append(f"- {f.get('feed', '?')}: {f.get('error') or f.get('peer', '')}")
            continue
        d = f["deletions_first"]
        shift = f["local_ts_shift_ns"]
        how = (f.get("clock") or {}).get("model", {}).get("method", "no clock model")
        extra = f" (synthetic params {f['synthetic_params']})" if "synthetic_params" in f else ""
        L.append(
            f"- {f['feed']}{extra}: {fmt(f['convert']['events'])} events; local clock shifted "
            f"by {shift / 1e6:,.1f} ms (the feed's clock model, {how}); deletions put first in "
            f"{d['reordered']:,} of "
            f"{d['runs']:,} diff messages ({d['moved']:,} events moved), without which mm_sim "
            f"skips {f['raw_feed_no_decision']:,} decisions on books crossed part-way through a "
            f"message; {f['convert']['split']:,} events with an earlier exch_ts than a previous "
            "one get an exchange-only copy in hftbacktest."
        )
        tp = f.get("trade_prints", {})
        if tp.get("count"):
            L[-1] += (
                f" Trade prints: {tp['count']:,}, median {tp['median_qty']:g}, "
                f"{tp['below_order_qty_share']:.0%} smaller than our order ({tp['order_qty']:g})."
            )
        done = [r for r in f.get("runs", []) if "error" not in r]
        if done:
            r = done[0]
            L[-1] += (
                f" mm_sim fills smaller than the order ({r['scenario']}, {r['queue_model']}): "
                f"{r['mm_sim']['fills_below_order_size']:,} of {r['mm_sim']['fills']:,}."
            )
    ag = peer.get("agreement", {})
    if ag:
        dd = ag["decisions_max_abs_diff"]
        L += [
            "",
            f"Decision counts: largest difference {dd['diff']:,} ({dd['run']}).",
        ]
        if ag["queue_model_no_effect"]:
            L.append(
                "Queue model had no effect (same fills, orders, quantity and PnL under every "
                "queue model) in: " + "; ".join(ag["queue_model_no_effect"]) + ". There the "
                "rows say nothing about how the two queue models compare."
            )
        if ag["queue_model_effect"]:
            L.append("Queue model changed the outcome in both simulators in: "
                     + "; ".join(ag["queue_model_effect"]) + ".")  # fmt: skip
        if ag.get("queue_model_confounded"):
            L.append(
                "Queue model effect unknown in hftbacktest (its exchange model differed between "
                "the queue models): " + "; ".join(ag["queue_model_confounded"]) + "."
            )
        if ag["not_compared"]:
            L.append("Not compared: " + "; ".join(ag["not_compared"]))
    L += [
        "",
        "Fill rules: hftbacktest fills the whole remaining order when a print goes through our "
        "price or the opposite best moves to or through it. mm_sim's default fills at most what "
        "printed at or through our price (small prints fill one order in several parts); with "
        "hftbacktest's rules (matching.through_fill=order) it fills the whole order on a print "
        "through; on a crossing book it fills at most the visible crossing quantity in every "
        "arm (no switch for hftbacktest's whole-order rule there).",
        "",
        f"{peer.get('note', '')}",
    ]
    return L


ARM_COLS = (("hbt_rules", "mm_sim, hftbacktest's rules"), ("default", "mm_sim, default rules"))


def _fill_table(feeds: list[dict[str, Any]]) -> list[str]:
    """Per run: hftbacktest against mm_sim with hftbacktest's fill rules (the 10 % target) and
    with its default rules (the model error), fills / orders filled / filled quantity."""
    L = [
        "Fill agreement per run: hftbacktest | mm_sim with hftbacktest's rules (venue in exchange "
        "time, print through = whole order, crossing fills) | mm_sim with its default rules "
        "(print through = at most the print). Ratios are mm_sim / hftbacktest for fills and "
        "fill quantity; within = both within 10 %. The no-cross column is mm_sim with "
        "hftbacktest's rules but no crossing fills (what that rule is worth). Each figure cell: "
        "hftbacktest / mm_sim hbt rules / mm_sim default.",
        "",
        "| feed | scenario | queue | fills | orders filled | fill qty | hbt rules: ratio "
        "fills, qty | within 10 % | default: ratio fills, qty | within 10 % | no-cross fills |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in feeds:
        for r in f.get("runs", []):
            if "error" in r or "mm_sim_arms" not in r:
                continue
            h, arms, fa = r["hftbacktest"], r["mm_sim_arms"], r["fill_agreement"]
            hb, df = arms["hbt_rules"], arms["default"]
            cells = [
                f"{h['fills']:,} / {hb['fills']:,} / {df['fills']:,}",
                f"{h['orders_filled']:,} / {hb['orders_filled']:,} / {df['orders_filled']:,}",
                f"{h['fill_qty']:.3f} / {hb['fill_qty']:.3f} / {df['fill_qty']:.3f}",
            ]
            for arm, _ in ARM_COLS:
                a = fa[arm]
                cells.append(f"{fmt(a['fills']['ratio'], 3)}, {fmt(a['fill_qty']['ratio'], 3)}")
                cells.append("YES" if a["within"] else "NO")
            cells.append(f"{arms['hbt_rules_no_cross']['fills']:,}")
            L.append(f"| {f['feed']} | {r['scenario']} | {r['queue_model']} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return L


def markdown(res: dict[str, Any]) -> str:
    env = res["environment"]
    floor = res["roofline"]["ns_per_event"]
    L = [
        f"# mm_sim bench ({res['mode']})",
        "",
        f"commit `{env['commit'][:12]}`{' (dirty)' if env['dirty'] else ''} · {env['cpu_model']}"
        f" · {env['cpus']} CPUs · load {env['loadavg_at_start'][0]:.2f} at start · Python "
        f"{env['python']} · numba {env['numba']} · numpy {env['numpy']} · {env['date_utc']} · "
        f"total {res['elapsed_s']:.0f} s",
        "",
        "## Targets",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for t in res["targets"]:
        met = "-" if t["met"] is None else ("yes" if t["met"] else "NO")
        note = f" ({t['note']})" if t["note"] else ""
        L.append(f"| {t['target']} | {t['goal']} | {fmt(t['measured'], 2)}{note} | {met} |")
    L += [
        "",
        f"## Throughput (roofline: numba scan of the same array = {floor:.2f} ns/event)",
        "",
        "| feed | events | events/s | ns/event | x scan floor | fills | convert s | convert ev/s "
        "| one cursor ev/s | two clocks ÷ one cursor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in res["throughput"].items():
        if "error" in t:
            L.append(f"| {name} | error: {t['error'][:80]} | | | | | | |")
            continue
        L.append(
            f"| {name} | {fmt(t['events'])} | {fmt(t['events_per_s'])} | "
            f"{t['ns_per_event']:.1f} | {t['x_scan_floor']:.1f} | {fmt(t['fills'])} | "
            f"{fmt(t.get('convert_s'), 2)} | {fmt(t.get('convert_events_per_s'))} | "
            f"{fmt(t.get('one_cursor_events_per_s'))} | {fmt(t.get('x_one_cursor'), 2)} |"
        )
    for note in res.get("real_data_notes", []):
        L.append(f"\n{note['name']}: {note.get('skipped') or note.get('error')}")
    L += _before_markdown(res.get("before"))
    st = res["stages"]
    L += [
        "",
        f"## Per-stage latency, ns/event ({st['method']})",
        "",
        "| stage | p50 | p99 | p99.9 | max | x scan floor (p50) |",
        "|---|---|---|---|---|---|",
    ]
    sfl = st["cumulative_ns_per_event"]["scan"]["p50"]
    for group in ("stage_ns_per_event", "cumulative_ns_per_event", "direct_ns_per_call"):
        for k, d in st[group].items():
            label = {"cumulative_ns_per_event": "cum: ", "direct_ns_per_call": "per call: "}.get(
                group, ""
            )
            L.append(
                f"| {label}{k} | {d['p50']:.1f} | {d['p99']:.1f} | {d['p99_9']:.1f} | "
                f"{d['max']:.1f} | {_ratio(d['p50'], sfl):.1f} |"
            )
    qm = st.get("quote_match_ns_per_event")
    if qm:
        L.append(
            f"| quote+limiter+match+accounting (engine - book) | {qm['p50']:.1f} | "
            f"{qm['p99']:.1f} | {qm['p99_9']:.1f} | {qm['max']:.1f} | "
            f"{_ratio(qm['p50'], sfl):.1f} |"
        )
    ls = res["scaling"]["length"]
    L += [
        "",
        "## Scaling with feed length (subprocess per row; feed streamed in 65,536-event chunks)",
        "",
        "| x | events | run s | events/s | x scan floor | RSS after load MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in ls["rows"]:
        if "error" in r:
            L.append(f"| {r['times']} | error | | | | | |")
            continue
        L.append(
            f"| {r['times']} | {fmt(r['events'])} | {r['run_s']:.3f} | "
            f"{fmt(r['events_per_s'])} | {_ratio(r['ns_per_event'], floor):.1f} | "
            f"{r['rss_after_load_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    L += [
        "",
        "## Scaling with book depth (synthetic limit orders spread over N ticks)",
        "",
        "| N ticks | levels bid/ask at end | events | events/s | x scan floor |",
        "|---|---|---|---|---|",
    ]
    for r in res["scaling"]["levels"]:
        if "error" in r:
            L.append(f"| {r['max_distance_ticks']} | error: {r['error'][:80]} | | | |")
            continue
        L.append(
            f"| {r['max_distance_ticks']} | {r['levels_bid_at_end']}/{r['levels_ask_at_end']} | "
            f"{fmt(r['events'])} | {fmt(r['events_per_s'])} | "
            f"{_ratio(r['ns_per_event'], r['scan_ns_per_event']):.1f} |"
        )
    L.append(f"\nResting orders per side (1/10/100): {res['scaling']['resting_orders']}")
    sk = res["soak"]
    L += [
        "",
        f"## Soak end to end (`python -m mm_sim soak {' '.join(sk['args'])}`, subprocess)",
        "",
        "| cache | wall s | events | events/s | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for label in ("cold", "warm"):
        r = sk.get(label, {})
        if "skipped" in r or "error" in r:
            L.append(f"| {label} | {r.get('skipped') or r.get('error', '')[:80]} | | | |")
            continue
        L.append(
            f"| {label} | {r['wall_s']:.1f} | {fmt(r['events'])} | {fmt(r['events_per_s'])} | "
            f"{fmt(r['peak_rss_mb'], 0)} |"
        )
    if "soak_profile" in res:
        L += ["", *soak_profile.markdown(res["soak_profile"])]
    L += ["", "## Live path: websocket frame arrival -> quote decision", ""]
    lv = res.get("live_latency", {})
    if "latency_us" in lv:
        L += [
            f"Fake exchange in a subprocess at {fmt(lv['msgs_per_s'], 0)} msg/s for "
            f"{lv['wall_s']:.0f} s per run ({fmt(lv['messages'])} messages); client in push "
            f"mode, `Engine.run_live` per frame, once with its event loop busy-polling (one core "
            f"at 100 %) and once sleeping between frames. Load at start "
            f"{lv['loadavg_1min_at_start']:.2f}.",
            "",
            "| client loop | µs | p50 | p99 | p99.9 | max |",
            "|---|---|---|---|---|---|",
        ]
        for run_key, loop, _ in LIVE_RUNS:
            run = res.get(run_key, {})
            if "latency_us" not in run:
                L.append(f"| {loop} | {run.get('error', 'not measured')} | | | | |")
                continue
            for key, label in (("latency_us", "arrival -> decision"),
                               ("service_us", "service (no wait behind earlier frames)"),
                               ("end_to_end_us", "exchange event time -> decision")):  # fmt: skip
                d = run[key]
                L.append(f"| {loop} | {label} | {fmt(d['p50'])} | {fmt(d['p99'])} | "
                         f"{fmt(d['p99_9'])} | {fmt(d['max'])} |")  # fmt: skip
        L.append("")
        for run_key, loop, _ in LIVE_RUNS:
            run = res.get(run_key, {})
            if "latency_us" in run:
                L.append(
                    f"- {loop}: {run['resyncs']} resyncs, client CPU "
                    f"{run['client_cpu_us_per_msg']:.0f} µs/msg, "
                    f"{fmt(run['client_involuntary_switches'])} involuntary context switches; "
                    f"backlogs of more than {run['catch_up_frames']} frames: "
                    f"{len(run['backlogs'])}; server send stalls over 1 ms: "
                    f"{len(run['server_stalls'])} (server lateness p99 "
                    f"{fmt(run['server']['late_us']['p99'])} µs)."
                )
        pull = lv.get("pull_mode", {})
        if "latency_us" in pull:
            a, e, t = pull["latency_us"], pull["end_to_end_us"], pull["end_to_end_tail"]
            L.append(
                f"- pull mode ({pull['path']}): arrival -> decision p50 {fmt(a['p50'])} / p99 "
                f"{fmt(a['p99'])} µs, exchange event time -> decision p50 {fmt(e['p50'])} / "
                f"p99 {fmt(e['p99'])} µs; of the end-to-end samples over its p99, "
                f"{t['clustered']} were due within {t['cluster_us']:g} µs of the previous "
                f"message (the workload's clustering), {t['ours']} not."
            )
        mx = lv.get("fake_exchange_max", {})
        if "msgs_per_s" in mx:
            L.append(f"\nFake exchange ceiling (bare reader): {fmt(mx['msgs_per_s'], 0)} msg/s.")
        L.append(f"\nMethod: {lv['method']}")
    else:
        L.append(str(lv.get("error", "not measured")))
    sw = res.get("sweep", {})
    if "workers_1" in sw:
        L += [
            "",
            f"## Sweep on Dask (`{sw['command']}`; {sw['workers_1']['cells']} cells x "
            f"{sw['feeds']} feeds)",
            "",
            "| workers | cells/min | incl. start-up | start + warm-up s | phase s |",
            "|---|---|---|---|---|",
        ]
        for n in (1, 2):
            w = sw[f"workers_{n}"]
            L.append(
                f"| {n} | {w['cells_per_min']:.1f} | {w['cells_per_min_incl_startup']:.1f} | "
                f"{w['cluster_start_and_warmup_s']:.2f} | {w['phase_s']:.2f} |"
            )
        p, pr = sw["plain_loop"], sw["per_run"]
        L += [
            "",
            f"Speed-up {sw['speedup_2_vs_1']:.2f} (target >= 1.8). CPU clocks: "
            f"{sw['workers_1']['cpu_per_run_s'] * 1e3:.0f} vs "
            f"{sw['workers_2']['cpu_per_run_s'] * 1e3:.0f} ms of CPU per run with 1 and 2 "
            f"workers; the 2 workers kept {sw['workers_2']['parallelism']:.2f} cores busy "
            f"while other processes kept {sw['workers_2']['others_cores']:.2f} of "
            f"{sw['cpus']} busy (load average {sw['loadavg_at_start'][0]:.2f} at start, "
            f"{sw['loadavg_at_end'][0]:.2f} at end). Plain in-process loop "
            f"{p['cells_per_min']:.1f} cells/min; Dask overhead "
            f"{sw['dask_overhead_per_cell_s'] * 1e3:.0f} ms/cell (dispatch "
            f"{sw['dispatch_per_run_s'] * 1e3:.1f} ms + in-worker "
            f"{sw['in_worker_slowdown_per_run_s'] * 1e3:.0f} ms per run).",
            "",
            f"One run vs the bare engine, side by side ({pr['runs']} runs of "
            f"{pr['events_per_run']:,} events; target <= 1.3x):",
            "",
            "| per run | wall ms | CPU ms | x bare (wall) | x bare (CPU) |",
            "|---|---|---|---|---|",
        ]
        for label, key in (
            ("bare `Engine.run` (feed in memory)", "bare"),
            (f"engine on the soak's chunks ({pr['engine_calls_per_run']} calls)", "chunked"),
            ("sweep run (`run_cell`, feed kept by the worker)", "run"),
            ("sweep run, worker's first on the feed (cache cleared)", "cold_run"),
        ):
            w, c = pr[f"{key}_wall_s"], pr[f"{key}_cpu_s"]
            L.append(
                f"| {label} | {w * 1e3:.0f} | {c * 1e3:.0f} | {w / pr['bare_wall_s']:.2f} | "
                f"{c / pr['bare_cpu_s']:.2f} |"
            )
        rp = sw.get("run_profile", {})
        if "share" in rp:
            parts = sorted(rp["share"].items(), key=lambda kv: -kv[1])
            L += ["", f"Where a sweep run's time goes ({rp['profiler']}, {rp['samples']:,} "
                  "samples of the runs above, feed kept): "
                  + ", ".join(f"{k} {v * 100:.1f} %" for k, v in parts if v > 0) + "."]  # fmt: skip
        elif rp:
            L += ["", f"Where a sweep run's time goes: not measured ({rp.get('skipped')})."]
    elif sw:
        L += ["", "## Sweep on Dask", "", str(sw.get("skipped") or sw.get("error", ""))]
    ct = res.get("compile", {})
    if ct:
        L += ["", "## Kernel compile vs load (one Engine.run of 1,000 events, subprocess)", ""]
        for label, r in ct.items():
            if "error" in r:
                L.append(f"- {label}: error {r['error'][:120]}")
            else:
                L.append(f"- {label} cache: first run {r['first_run_s']:.2f} s "
                         f"(imports {r['import_s']:.2f} s)")  # fmt: skip
    L += convert_bench.markdown(res.get("conversion", {}))
    L += ["", "## Peer (hftbacktest)", ""]
    L += peer_markdown(res.get("peer", {}))
    return "\n".join(L) + "\n"
