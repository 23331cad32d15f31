"""The parts of ``docs/benchmarks.md`` built from repeated cells (``bench/report.py`` calls
them): M7's four parts, and the table of every repeated cell with its range and whether it
is noisy (``bench/stats.py``)."""

from __future__ import annotations

from typing import Any

from stats import NOISY_PCT, cell, field_values, rise_summary, summary

M7_PARTS = [
    ("stalled", "10 stalled"),
    ("churn", "churn"),
    ("dead", "10 dead peers"),
]


def mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.1f}"


def rise_cell(m7: dict[str, Any], part: str) -> str:
    """'+12 % (+5 to +20)' with 'noisy' when the baseline's or the part's p99 is."""
    base, during = m7.get("baseline", {}), m7.get(part, {})
    runs = steps_of(during)
    if not runs:
        return "-"
    r = rise_summary(steps_of(base), runs)
    if r["rise_pct"] is None:
        return "-"
    out = f"{r['rise_pct']:+.0f} %"
    if len(runs) > 1:
        out += f" ({r['min_pct']:+.0f} to {r['max_pct']:+.0f})"
    return out + (" noisy" if r["noisy"] else "")


def steps_of(part: dict[str, Any]) -> list[dict[str, Any]]:
    """A part's repetitions: its runs, or the part itself when it is one step (older
    results), or none when it was not measured."""
    runs: list[dict[str, Any]] = part.get("runs") or ([part] if "p99_ms" in part else [])
    return runs


def p99_cell(part: dict[str, Any]) -> str:
    return cell(field_values(steps_of(part), "p99_ms"), 1)


def reclaim_cell(dead: dict[str, Any]) -> str:
    if "error" in dead:
        return dead["error"]
    n = dead.get("server_conns_at_vanish")
    kernel = dead.get("kernel_abort_s")
    against = f" (kernel alone: {kernel:.1f} s)" if kernel else " (kernel alone: not within it)"
    if "reclaimed_s" in dead:
        return f"all {n} in {dead['reclaimed_s']:.1f} s{against}"
    if "left" not in dead:
        return "-"
    return f"{dead['left']} of {n} still open after {dead.get('watched_s', 0):.0f} s{against}"


def m7_section(rep: Any) -> None:
    cfg = rep.r["cfg"]
    reps, some = cfg.get("reps", 1), ", ".join(cfg.get("rep_targets", []))
    rep.add(
        "## M7: misbehaving clients among the broadcast streams",
        "",
        f"{cfg['m1_clients']} streams of one user receive {cfg['m7_rate']} events/s with a "
        f"{cfg['m7_pad']:,}-byte pad; each part measures their p99 in steps of "
        f"{cfg['m7_s']:g} s"
        + (f" ({reps} on {some}: median, range in brackets; one elsewhere)" if some else "")
        + " and the server's RSS. *Stalled*: 10 more "
        "streams of that user stop reading after `stream-open` (4 KiB receive buffer). "
        f"*Churn*: streams of the other users opened at {cfg.get('m7_churn_rate', '-')}/s, "
        f"each closed {cfg.get('m7_churn_hold_s', '-')} s after its `stream-open`. *Dead "
        "peers*: 10 more streams of that user from 127.0.0.250, then every packet from or to "
        "that address is dropped on `lo` (no FIN, no RST, no ACK: `bench/m7.py`); the "
        "server's ESTABLISHED sockets to it are counted until none is left or "
        f"{cfg.get('m7_reclaim_s', 0):g} s (while the bench goes on with M2). Rise = the "
        "part's median p99 over the baseline's (range: each repetition over the baseline's "
        "median).",
        "",
    )
    rows, res_rows = [], []
    for k in rep.keys:
        m = rep.t[k].get("m7") if rep.ok(k) else None
        if not m or "baseline" not in m:
            rows.append([rep.label(k), "-", "", "", "", "", "", ""])
            continue
        row = [rep.label(k), p99_cell(m["baseline"])]
        lost = 0
        for part, _ in M7_PARTS:
            p = m.get(part, {})
            row += [p99_cell(p), rise_cell(m, part)]
            lost += sum(r.get("lost", 0) + r.get("gaps", 0) for r in steps_of(p))
        rows.append([*row, str(lost)])
        churn, dead = m.get("churn", {}), m.get("dead", {})
        res_rows.append(
            [
                rep.label(k),
                mib(m.get("stalled", {}).get("rss_growth_kib")),
                f"{mib(churn.get('rss_growth_kib'))} / {mib(churn.get('rss_after_kib'))}",
                (
                    f"{churn['opened_per_s']:.0f} of {churn['rate']}, {churn['open_errors']} "
                    f"errors, p50 / p99 {churn['open_p50_ms']:.0f} / {churn['open_p99_ms']:.0f} ms"
                    if "opened_per_s" in churn
                    else "-"
                ),
                mib(dead.get("rss_growth_kib")),
                reclaim_cell(dead),
            ]
        )
    rep.table(
        [
            "server",
            "others' p99 ms, baseline",
            *(h for _, name in M7_PARTS for h in (f"p99 ms, {name}", "rise")),
            "others lost + gaps, all parts",
        ],
        rows,
    )
    rep.table(
        [
            "server",
            "RSS growth MiB, stalled",
            "churn: RSS growth MiB during / after",
            "churn: opens/s achieved, errors, open p50 / p99",
            "dead: RSS growth MiB",
            "dead peers' server sockets gone (kernel alone: a bare socket, same blackhole)",
        ],
        res_rows,
    )


def repeated_cells(r: dict[str, Any]) -> list[tuple[str, str, list[float], int]]:
    """(server, cell, repetitions' values, digits) of every cell measured more than once."""
    out: list[tuple[str, str, list[float], int]] = []
    for key, t in r.get("targets", {}).items():
        label = str(t.get("label", key))
        best = t.get("m1_best")
        if best:
            runs = best["runs"]
            out.append((label, f"M1 max sustained ({best['rate']:g}/s step), deliveries/s",
                        field_values(runs, "deliveries_per_s"), 0))  # fmt: skip
            out.append((label, "M1 CPU-µs per delivery at that step",
                        field_values(runs, "server_cpu_us_per_delivery"), 1))  # fmt: skip
        runs3 = t.get("m3", {}).get("runs", [])
        for q in ("p50_ms", "p99_ms"):
            if len(runs3) > 1:
                out.append((label, f"M3 client {q[:3]} ms", field_values(runs3, q), 1))
        m7 = t.get("m7", {})
        for part in ("baseline", *(p for p, _ in M7_PARTS)):
            runs7 = m7.get(part, {}).get("runs", [])
            if len(runs7) > 1:
                out.append((label, f"M7 others' p99 ms, {part}", field_values(runs7, "p99_ms"), 1))
    m6 = r.get("m6", {})
    for name in ("bare", "bridge"):
        runs6 = m6.get(name, {}).get("runs", [])
        if len(runs6) > 1:
            out.append(("ingest", f"M6 {name} events/s", field_values(runs6, "per_s"), 0))
    ts = m6.get("taskstream", [])
    for c in ts if isinstance(ts, list) else []:
        if len(c.get("runs", [])) > 1:
            name = f"M6 consume_events x{c['procs']} events/s"
            out.append(("ingest", name, field_values(c["runs"], "per_s"), 0))
    return out


def noisy_section(rep: Any) -> None:
    cells = repeated_cells(rep.r)
    rep.add("## Repeated cells and their noise", "")
    if not cells:
        rep.add("No cell was repeated in this run (quick mode: one repetition each).", "")
        return
    noisy = [f"{who}: {what}" for who, what, vs, _ in cells if summary(vs)["noisy"]]
    rep.add(
        "Every cell measured more than once: its median, its range and how far the range "
        f"reaches from the median. *Noisy*: past ±{NOISY_PCT:g} % of the median, so one "
        "repetition alone could have moved the cell by more than that; read those cells as "
        "a range. Cells not listed here were measured once (M1's other steps, M2, M4, M5, "
        "the peers' M1 where not repeated).",
        "",
        "**Noisy in this run**: " + ("; ".join(noisy) if noisy else "none") + ".",
        "",
    )
    rows = []
    for who, what, vs, digits in cells:
        s = summary(vs)
        m = s["median"]
        spread = (
            f"{100 * (s['min'] / m - 1):+.0f} % / {100 * (s['max'] / m - 1):+.0f} %"
            if s["n"] > 1 and m
            else "-"
        )
        rows.append([who, what, str(s["n"]), cell(vs, digits), spread])
    rep.table(["server", "cell", "repetitions", "median (range)", "range from the median"], rows)
