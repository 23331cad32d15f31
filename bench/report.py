"""Render ``bench/.build/results-<mode>.json`` into ``docs/benchmarks.md`` and PNG plots.

The static parts (findings from profiling, what is not measured yet and why) live in
``bench/notes.md`` and are copied in after the tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import matplotlib
from report_reps import m7_section, noisy_section
from stats import best_step, field_values, median_run, passes, rise_summary
from stats import cell as med_cell

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ORDER = ["T_uv", "T_daphne", "U", "G", "D"]
# Taskstream's key numbers from the first full run (b9f5e4e + uncommitted issue #3 files),
# made by ``key_numbers`` from that run's results-full.json; kept for the before/after table.
BEFORE = "before-b9f5e4e.json"
# Issue #8's "before": the full `make bench` run it quotes, on 5210924 (the ingest code before
# the #8 work). Copied from the issue, never measured by this run: (metric, target, Taskstream
# before, peer before). The issue names no server for Taskstream; M6 does not depend on one.
ISSUE8_COMMIT = "5210924"
ISSUE8_BEFORE = [
    (
        "M6 `consume_events` events/s, one process, state writes on (CPU-µs per event)",
        "≥ 10,000",
        "1,491 (518)",
        "bridge 19.6k",
    ),
    (
        "M2 targeted, 1,000 events/s offered: delivered events/s, p99 ms",
        "p99 ≤ 250, none lost",
        "505, p99 2,982",
        "U 998, p99 7; D 998, p99 15",
    ),
    (
        "M2 ceiling: the highest passing step's delivered events/s (÷ U)",
        "≥ 0.5x U",
        "n/a (steps stopped at 1,000)",
        "n/a",
    ),
    ("M3 ingest+layer stage p50 ms", "≤ 3", "11.2", "U 2.1"),
]
KEY_ROWS = [
    ("M1 max sustained deliveries/s (p99 ≤ 250 ms, none lost)", "≥ 0.5x U, ≥ 3x D", "m1_max"),
    ("M1 top step: delivered/s, p50 / p99 ms, lost", "", "m1_top"),
    ("M2 max sustained events/s", "≥ 0.5x U", "m2_max"),
    ("M2 top step: delivered/s, p50 / p99 ms, lost", "", "m2_top"),
    ("M3 client p50 / p99 / p99.9 ms (5,000 deliveries/s)", "p50 ≤ 10, p99 ≤ 50", "m3"),
    ("M4 streams open of 10,000; KiB RSS per stream", "10,000; ≤ 64 KiB", "m4"),
    ("M4 idle CPU µs/s per stream at the top size", "", "m4_cpu"),
    ("M5 reconnect storm", "all caught up ≤ 3 s", "m5"),
    ("M6 `consume_events` events/s (CPU-µs per event)", "≥ 10,000", "m6"),
    (
        "M7 others' p99 rise: 10 stalled / churn / 10 dead peers; RSS growth MiB",
        "≤ 20 %, bounded",
        "m7",
    ),
]


def key_numbers(r: dict[str, Any]) -> dict[str, dict[str, str]]:
    """One short cell per KEY_ROWS key for each Taskstream target."""
    out: dict[str, dict[str, str]] = {}
    u = r["targets"].get("U", {})
    m6 = m6_one(r)
    m6_cell = (
        f"{fmt(median(m6, 'per_s'))} ({fmt(median(m6, 'cpu_us_per_event'))})"
        if median(m6, "per_s") is not None
        else "-"
    )
    for key in ("T_uv", "T_daphne"):
        t = r["targets"].get(key, {})
        if not t or "error" in t:
            continue
        cells: dict[str, str] = {}
        for metric in ("m1", "m2"):
            steps = t.get(metric, [])
            b, ub = best_step(steps), best_step(u.get(metric, []))
            if metric == "m1":  # the median of its repetitions where it was repeated
                b, ub = repeated_best(t) or b, repeated_best(u) or ub
            cells[f"{metric}_max"] = (
                f"{fmt(b['deliveries_per_s'])} "
                f"({ratio(b['deliveries_per_s'], ub['deliveries_per_s'] if ub else None)} U)"
                if b
                else "none passed"
            )
            top = steps[-1] if steps else None
            cells[f"{metric}_top"] = (
                f"{fmt(top['deliveries_per_s'])}, {fmt(top['p50_ms'], 1)} / "
                f"{fmt(top['p99_ms'], 1)}, {fmt(top['lost'])} lost"
                if top
                else "-"
            )
        c = t.get("m3", {}).get("client")
        cells["m3"] = (
            f"{fmt(c['p50_ms'], 1)} / {fmt(c['p99_ms'], 1)} / {fmt(c['p999_ms'], 1)}" if c else "-"
        )
        m4 = t.get("m4", [])
        top4 = m4[-1] if m4 else None
        cells["m4"] = (
            f"{fmt(top4['open'])} of {fmt(top4['clients'])}; {fmt(top4['rss_per_conn_kib'], 1)}"
            if top4
            else "-"
        )
        cells["m4_cpu"] = fmt(top4["idle_cpu_us_per_s_per_conn"], 1) if top4 else "-"
        m5 = t.get("m5")
        if not m5:
            cells["m5"] = "-"
        elif m5.get("replay"):
            done = m5.get("all_caught_up_s")
            cells["m5"] = (
                f"replay: all {fmt(m5['clients'])} caught up in {fmt(done, 2)} s, "
                f"{fmt(m5['gaps'])} gaps / {fmt(m5['dups'])} dups"
                if done is not None
                else f"replay: {fmt(m5.get('caught_up'))} of {fmt(m5['clients'])} caught up, "
                f"{fmt(m5['connect_errors'])} errors"
            )
        else:
            cells["m5"] = (
                f"no replay measured; {fmt(m5['opened'])} of {fmt(m5['clients'])} reopened, "
                + (
                    f"all open in {fmt(m5['all_open_s'], 2)} s"
                    if m5["all_open_s"] is not None
                    else "not all open"
                )
                + f", {fmt(m5['connect_errors'])} errors"
            )
        cells["m6"] = m6_cell
        m7 = t.get("m7")
        if m7:
            b7 = m7["baseline"]
            rises, growth = [], []
            for part in ("stalled", "churn", "dead"):
                p = m7.get(part, {})
                if "p99_ms" not in p:
                    continue
                r7 = rise_summary(b7.get("runs", [b7]), p.get("runs", [p]))["rise_pct"]
                rises.append(f"{fmt(r7, 0)} %")
                growth.append(fmt(p.get("rss_growth_kib", 0) / 1024, 1))
            cells["m7"] = f"{' / '.join(rises)}; {' / '.join(growth)} MiB"
        out[key] = cells
    return out


def repeated_text(r: dict[str, Any]) -> str:
    """What the run repeated, for the header."""
    reps, m6 = r["cfg"].get("reps", 1), r.get("m6", {}).get("reps", 1)
    some = ", ".join(r["cfg"].get("rep_targets", []))
    text = (
        f"Repeated cells (M3, M7's parts{f', M1 highest passing step on {some}' if some else ''}"
        f": {reps} times; M6: {m6} times)"
        if reps > 1
        else f"One run per cell except M6 ({m6} times)"
    )
    return (
        text + " show the median with the range in brackets and *noisy* where the range "
        "reaches past ±15 % of the median (table: *Repeated cells and their noise*)."
    )


def repeated_best(t: dict[str, Any]) -> dict[str, Any] | None:
    """M1's highest passing step as the median of its repetitions (None if not repeated)."""
    runs = t.get("m1_best", {}).get("runs", [])
    return median_run(runs) if len(runs) > 1 else None


def m6_one(r: dict[str, Any]) -> dict[str, Any]:
    """M6's one-process ``consume_events`` cell ({"runs": [...]}), from old results files too
    (one run, no process count)."""
    ts = r.get("m6", {}).get("taskstream", {})
    if isinstance(ts, dict):
        return {"procs": 1, "runs": [ts]} if "per_s" in ts else {}
    return next((c for c in ts if c.get("procs") == 1), {})


def values(cell: dict[str, Any], key: str) -> list[float]:
    return [run[key] for run in cell.get("runs", []) if run.get(key) is not None]


def median(cell: dict[str, Any], key: str) -> float | None:
    """The median over the cell's repetitions (the lower middle one for an even count)."""
    vs = sorted(values(cell, key))
    return vs[(len(vs) - 1) // 2] if vs else None


def med_range(cell: dict[str, Any], key: str, digits: int = 0) -> str:
    """Median, and with several repetitions the range: "12,345 (11,900 to 12,800)"."""
    vs = values(cell, key)
    if not vs:
        return "-"
    out = fmt(median(cell, key), digits)
    if len(vs) > 1:
        out += f" ({fmt(min(vs), digits)} to {fmt(max(vs), digits)})"
    return out


def fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def full_hash(short: Any) -> str:
    """The full commit id of the run's short one (as recorded by run.py)."""
    out = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{short}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return out or str(short)


def ceiling_cell(c: tuple[float, bool] | None, u: tuple[float, bool] | None) -> str:
    """``c`` and ``u``: (ceiling, whether it is the top step) of a server and of U."""
    if not c:
        return "none passed"
    r = ratio(c[0], u[0] if u else None)
    if u and u[1] and not c[1]:
        r = f"≤ {r} U: U passed every step"
    elif c[1] and u and not u[1]:
        r = f"≥ {r} U"
    elif c[1] and u and u[1]:
        r = f"{r} U: both passed every step"
    else:
        r = f"{r} U"
    return f"{'≥ ' if c[1] else ''}{fmt(c[0])} ({r})"


def warmup_row(warm: dict[str, Any] | None) -> str:
    """The broker's warm-up before the first target (bench/warmup.py), one table row."""
    if not warm:
        return "| Kafka warm-up | none (a run from before bench/warmup.py) |"
    windows = ", ".join(
        f"{ms:.1f} ms / {cpu:.0f} %"
        for ms, cpu in zip(warm["window_p50_ms"], warm["window_kafka_cpu_pct"], strict=True)
    )
    return (
        f"| Kafka warm-up | {warm['seconds']:.0f} s at {warm['rate']:.0f} records/s, "
        f"{warm['readers']} committing readers; produce → consume p50 / broker CPU per "
        f"{warm['window_s']:.0f} s window: {windows}"
        + ("" if warm["stable"] else " (**not settled**: the first target ran on a cold broker)")
        + " |"
    )


class Report:
    def __init__(self, results: dict[str, Any]) -> None:
        self.r = results
        self.t: dict[str, dict[str, Any]] = results["targets"]
        self.keys = [k for k in ORDER if k in self.t]
        self.lines: list[str] = []

    def ok(self, key: str) -> bool:
        return "error" not in self.t[key]

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, head: list[str], rows: list[list[str]]) -> None:
        self.add("| " + " | ".join(head) + " |", "|" + "---|" * len(head))
        self.add(*("| " + " | ".join(r) + " |" for r in rows))
        self.add("")

    def label(self, key: str) -> str:
        return str(self.t[key]["label"])

    def header(self) -> None:
        r, env = self.r, self.r.get("env", {})
        self.add(
            "# Benchmarks: Taskstream against peers",
            "",
            f"Generated by `make bench{'-quick' if r['mode'] == 'quick' else ''}` "
            f"(`bench/run.py --mode {r['mode']}`, then `bench/report.py`) on {env.get('date')}; "
            f"the run took {r.get('runtime_s', 0):.0f} s. Raw numbers: "
            f"`bench/.build/results-{r['mode']}.json` (not committed). Method: "
            "`bench/run.py` (method: its module docstring). "
            + repeated_text(r)
            + " Read ratios, not absolute values.",
            "",
            "| machine and software | |",
            "|---|---|",
            f"| CPU | {env.get('cpu')} x {env.get('cores')} cores, kernel {env.get('kernel')}, "
            f"governor {env.get('governor')} |",
            f"| pinning | {r.get('pinning', '')} |",
            f"| code | git {full_hash(env.get('git'))}"
            + (
                f" with {env.get('dirty_core_files')} uncommitted files under realtime/ tasks/ "
                "config/ |"
                if env.get("dirty_core_files")
                else " (no uncommitted changes under realtime/ tasks/ config/) |"
            ),
            f"| Python | {env.get('python')}: "
            + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
            + " |",
            f"| services | Redis {env.get('redis_server')}, {env.get('kafka')} (KRaft, one broker),"
            f" librdkafka {env.get('librdkafka')}, PostgreSQL (bench database taskstream_bench)|",
            f"| Go | {env.get('go')} |",
            warmup_row(r.get("warmup")),
            f"| limits | open files {env.get('fd_limit')} per process (hard limit; not raisable "
            "here), 8 client source addresses 127.0.0.2-9 |",
            "",
            "Peers, same run, same load, same payload (~250-byte `task.progress` envelope with "
            "`seq` and `t_ns` in `data`), same Redis hop:",
            "",
            "- **Taskstream**: `consume_events` (Kafka → PostgreSQL → channels-redis group per "
            "user) → per-process hub → SSE, under uvicorn (`manage.py serve`, the documented "
            "server, since 2026-11-30; plain `uvicorn config.asgi:application` before) and "
            "under daphne.",
            "- **U**: `bench/peers/uvicorn_min.py`, raw ASGI on uvicorn (uvloop, httptools): one "
            "Redis pub/sub subscription per process, bounded per-stream buffers, same JWT check.",
            "- **G**: `bench/peers/gohub`, Go `net/http` hub, RESP subscriber over `net.Conn`, "
            "same JWT check.",
            "- **D**: django-eventstream from PyPI, `EVENTSTREAM_REDIS` set as its README says "
            "for multi-process use, served by daphne (its README's deploy command); no storage "
            "class, default channel manager (so no token check), one channel per user.",
            "- Ingest of U, G, D: `bench/bridge.py`, a confluent-kafka consumer (same "
            "`fetch.wait.max.ms=10`) that `PUBLISH`es the SSE frame to Redis, pipelined per batch.",
            "- Load client: `bench/loadclient` (Go, stdlib only): N streams, SSE parsing, "
            "latency from `t_ns`, gaps and duplicates from `seq` per stream; its CPU is reported.",
            "",
        )

    def m1_m2(self, metric: str, title: str, unit: str) -> None:
        self.add(f"## {metric.upper()}: {title}", "")
        cfg = self.r["cfg"]
        n = cfg[f"{metric}_clients"]
        if metric == "m1":
            self.add(
                f"{n} streams of **one user** (Taskstream has only per-user streams; one user "
                "with many streams is its fan-out case). Offered rates in events/s: "
                f"{cfg['m1_rates']}, {cfg['step_s']:g} s each. *Max sustained* = the highest "
                "step with p99 ≤ 250 ms and nothing lost; on "
                f"{', '.join(cfg.get('rep_targets', [])) or 'no server'} that step is run "
                f"{cfg.get('reps', 1)} times in all (again on fresh streams after the ladder) "
                "and its cells are the median (range).",
                "",
            )
        else:
            self.add(
                f"{n} streams, one per user; events keyed round-robin to the users. Offered "
                f"rates in events/s: {cfg['m2_rates']}, {cfg['step_s']:g} s each, one after "
                "the other on the same streams. A step *passes* at p99 ≤ 250 ms with nothing "
                "lost (no loss, gaps or duplicates); *max sustained* = the highest passing step.",
                "",
            )
        rows = []
        base = {k: best_step(self.t[k].get(metric, [])) for k in self.keys if self.ok(k)}
        if metric == "m1":
            base |= {k: repeated_best(self.t[k]) or b for k, b in base.items()}
        u = base.get("U")
        for k in self.keys:
            if not self.ok(k):
                rows.append([self.label(k), "failed: " + self.t[k]["error"][:80]] + [""] * 7)
                continue
            steps = self.t[k].get(metric, [])
            top = steps[-1] if steps else {}
            b = base.get(k)
            reps = self.t[k].get("m1_best", {}).get("runs", []) if metric == "m1" else []
            rows.append(
                [
                    self.label(k),
                    (med_cell(field_values(reps, "deliveries_per_s")) if len(reps) > 1 else None)
                    or (fmt(b["deliveries_per_s"]) if b else "none passed"),
                    ratio(
                        b["deliveries_per_s"] if b else None,
                        u["deliveries_per_s"] if u else None,
                    ),
                    fmt(top.get("deliveries_per_s")),
                    f"{fmt(top.get('p50_ms'), 1)} / {fmt(top.get('p99_ms'), 1)}",
                    f"{fmt(top.get('lost'))} / {fmt(top.get('gaps'))} / {fmt(top.get('dups'))}",
                    (
                        med_cell(field_values(reps, "server_cpu_us_per_delivery"), 1)
                        if len(reps) > 1
                        else (fmt(b["server_cpu_us_per_delivery"], 1) if b else "-")
                    ),
                    f"{fmt(top.get('server_cpu_pct'))} / {fmt(top.get('client_cpu_pct'))} / "
                    f"{fmt(top.get('ingest_cpu_pct'))} / {fmt(top.get('kafka_cpu_pct'))}",
                ]
            )
        self.table(
            [
                "server",
                f"max sustained {unit}",
                "÷ U",
                f"top step achieved {unit}",
                "top step p50 / p99 ms",
                "top step lost / gaps / dups",
                "server CPU-µs per delivery (max step)",
                "top step CPU % server / client / ingest / Kafka",
            ],
            rows,
        )
        if metric == "m2":
            self.m2_steps()
        self.plot_steps(metric, title, unit)

    def m2_steps(self) -> None:
        """Every M2 step of every server, which pass, and the ceiling as a ratio to U."""
        rates = self.r["cfg"]["m2_rates"]
        ceilings = {k: self.ceiling(k) for k in self.keys if self.ok(k)}
        u = ceilings.get("U")
        rows = []
        for k in self.keys:
            if not self.ok(k):
                rows.append([self.label(k), "failed"] + [""] * len(rates) + [""])
                continue
            steps = {s["rate"]: s for s in self.t[k].get("m2", [])}
            cells = []
            for rate in rates:
                st = steps.get(rate)
                cells.append(
                    f"{fmt(st['deliveries_per_s'])}, {fmt(st['lost'])} lost, p99 "
                    f"{fmt(st['p99_ms'])} ms: **{'pass' if passes(st) else 'fail'}**"
                    if st
                    else "-"
                )
            passed = [fmt(s["rate"]) for s in self.t[k].get("m2", []) if passes(s)]
            c = ceilings.get(k)
            rows.append(
                [
                    self.label(k),
                    ", ".join(passed) or "none",
                    *cells,
                    ceiling_cell(c, u),
                ]
            )
        self.add(
            "Each step: delivered events/s, events lost, p99 latency. *Ceiling* = the delivered "
            "rate of the highest passing step, as a ratio to U's; *≥* when the top step passed "
            "(the ceiling is above what was offered).",
            "",
        )
        self.table(
            [
                "server",
                "steps passed (offered events/s)",
                *(f"{fmt(r)}/s offered" for r in rates),
                "ceiling events/s (÷ U)",
            ],
            rows,
        )

    def ceiling(self, key: str) -> tuple[float, bool] | None:
        """The highest passing M2 step's delivered rate, and whether it is the top step."""
        steps = self.t.get(key, {}).get("m2", [])
        b = best_step(steps)
        if not b:
            return None
        return b["deliveries_per_s"], b["rate"] == max(s["rate"] for s in steps)

    def plot_steps(self, metric: str, title: str, unit: str) -> None:
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in self.keys:
            steps = self.t[k].get(metric, []) if self.ok(k) else []
            if steps:
                ax.plot(
                    [s["offered_deliveries_per_s"] for s in steps],
                    [s["deliveries_per_s"] for s in steps],
                    marker="o",
                    label=self.label(k),
                )
        ax.set_xlabel(f"offered {unit}")
        ax.set_ylabel(f"delivered {unit}")
        ax.set_title(f"{metric.upper()}: {title} ({self.r['mode']} run)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        name = f"benchmarks-{metric}.png"
        fig.tight_layout()
        fig.savefig(DOCS / name, dpi=90)
        plt.close(fig)
        self.add(f"![{metric.upper()}]({name})", "")

    def m3(self) -> None:
        cfg = self.r["cfg"]
        self.add(
            "## M3: Kafka produce → client latency at a fixed load",
            "",
            f"{cfg['m3_rate']} events/s to one user with {cfg['m1_clients']} streams "
            f"({cfg['m3_rate'] * cfg['m1_clients']:,} deliveries/s) for {cfg['m3_s']:.0f} s in "
            f"{cfg.get('reps', 1)} step(s) (client cells: median, range in brackets), "
            "producer `linger.ms=0`. Stages, all measured from the producer's `t_ns` in the same "
            "run: **Kafka** = a bare consumer of the same topic (the floor); **stateful** = a "
            "bare consumer that commits state before it publishes, as Taskstream's delivery rule "
            "orders it (`bench/kfloor.py stateful`: per record a PostgreSQL transaction in two "
            "round trips, then one Redis PUBLISH to a subscriber; no adapter, store, layer or "
            "thread hops), the floor of Taskstream's stage; **ingest+layer** = "
            "a probe that receives what the server's ingress receives (for Taskstream a second "
            "member of the user's channels-redis group, for U/G/D a Redis subscriber); "
            "**client** = the load client. push = client - ingest+layer.",
            "",
        )
        rows = []
        for k in self.keys:
            m = self.t[k].get("m3") if self.ok(k) else None
            if not m:
                rows.append([self.label(k), "not measured"] + [""] * 6)
                continue
            c, kf, ly = m["client"], m.get("kafka", {}), m.get("layer", {})
            sf = m.get("stateful", {})
            push = c["p50_ms"] - ly["p50"] / 1000 if ly.get("count") else None
            layer = (
                f"{fmt(ly['p50'] / 1000, 1)} / {fmt(ly['p99'] / 1000, 1)}"
                if ly.get("count")
                else "not captured (probe saw no layer message)"
            )
            runs = m.get("runs", [c])
            rows.append(
                [
                    self.label(k),
                    f"{med_cell(field_values(runs, 'p50_ms'), 1)} / "
                    f"{med_cell(field_values(runs, 'p99_ms'), 1)} / {fmt(c['p999_ms'], 1)}",
                    f"{fmt(kf.get('p50', 0) / 1000, 1)} / {fmt(kf.get('p99', 0) / 1000, 1)}",
                    f"{fmt(sf['p50'] / 1000, 1)} / {fmt(sf['p99'] / 1000, 1)}"
                    if sf.get("count")
                    else "-",
                    layer,
                    fmt(push, 1),
                    f"{fmt(c['lost'])} / {fmt(c['gaps'])}",
                    fmt(c["server_cpu_us_per_delivery"], 1),
                ]
            )
        self.table(
            [
                "server",
                "client p50 / p99 / p99.9 ms",
                "Kafka floor p50 / p99 ms",
                "stateful floor p50 / p99 ms",
                "ingest+layer p50 / p99 ms",
                "push p50 ms",
                "lost / gaps",
                "server CPU-µs per delivery",
            ],
            rows,
        )
        fig, ax = plt.subplots(figsize=(7, 4))
        labels, kafka, layer, push_ = [], [], [], []
        for k in self.keys:
            m = self.t[k].get("m3") if self.ok(k) else None
            if not m:
                continue
            kf = m.get("kafka", {}).get("p50", 0) / 1000
            ly = max(kf, m.get("layer", {}).get("p50", 0) / 1000)
            cl = max(ly, m["client"]["p50_ms"])
            labels.append(k)
            kafka.append(kf)
            layer.append(ly - kf)
            push_.append(cl - ly)
        ax.bar(labels, kafka, label="Kafka")
        ax.bar(labels, layer, bottom=kafka, label="ingest + layer")
        tops = [a + b for a, b in zip(kafka, layer, strict=True)]
        ax.bar(labels, push_, bottom=tops, label="push")
        ax.set_ylabel("p50 latency, ms")
        ax.set_title(f"M3: produce → client p50 by stage ({self.r['mode']} run)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(DOCS / "benchmarks-m3.png", dpi=90)
        plt.close(fig)
        self.add("![M3](benchmarks-m3.png)", "")

    def m4(self) -> None:
        self.add(
            "## M4: idle connection cost",
            "",
            "Streams spread over all bench users; RSS of the server process "
            "(ΔRSS from before the first idle stream ÷ streams), kernel Slab Δ ÷ streams (whole "
            "machine, includes the client's sockets), idle CPU over the window. Heartbeats are "
            "15 s, longer than the window, so idle CPU is near zero by design. *open in s*: "
            "how long opening that step's new streams took (50 at a time); a step stops "
            f"waiting after {self.r['cfg'].get('m4_open_s', 120):.0f} s (limit) and reports "
            "what opened.",
            "",
        )
        sizes = self.r["cfg"]["m4_sizes"]
        rows = []
        for k in self.keys:
            m4 = {e["clients"]: e for e in self.t[k].get("m4", [])} if self.ok(k) else {}
            row = [self.label(k)]
            for n in sizes:
                e = m4.get(n)
                took = (
                    f" in {fmt(e['open_s'], 0)} s"
                    + (" (limit)" if e["open"] < n and e["open_s"] >= e["open_limit_s"] else "")
                    if e and "open_s" in e
                    else ""
                )
                row.append(
                    f"{fmt(e['open'])} open{took}, {fmt(e['rss_per_conn_kib'], 1)} KiB RSS, "
                    f"{fmt(e['slab_per_conn_kib'], 1)} KiB slab, "
                    f"{fmt(e['idle_cpu_us_per_s_per_conn'], 2)} µs/s"
                    if e
                    else "-"
                )
            rows.append(row)
        self.table(["server", *(f"{n:,} streams" for n in sizes)], rows)
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in self.keys:
            pts = self.t[k].get("m4", []) if self.ok(k) else []
            if pts:
                ax.plot(
                    [p["clients"] for p in pts],
                    [p["rss_kib"] / 1024 for p in pts],
                    marker="o",
                    label=self.label(k),
                )
        ax.set_xlabel("idle streams")
        ax.set_ylabel("server RSS, MiB")
        ax.set_title(f"M4: server RSS vs idle streams ({self.r['mode']} run)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(DOCS / "benchmarks-m4.png", dpi=90)
        plt.close(fig)
        self.add("![M4](benchmarks-m4.png)", "")

    def m5(self) -> None:
        cfg = self.r["cfg"]
        missed = cfg.get("m5_missed", 0)
        self.add(
            "## M5: reconnect storm with `Last-Event-ID` replay",
            "",
            f"The {cfg['m5_clients']:,} streams of the M2 set (one per user) disconnect; "
            f"{missed} events per user are produced and ingested while they are away; then all "
            "reconnect at once (t0). Taskstream's streams send `Last-Event-ID` = the last `id:` "
            "each saw (a cursor); *all caught up* = when the last stream had received every "
            "event its user missed (seq per user carried across the reconnect, so a gap or a "
            "duplicate is counted). *resumed* = responses whose `Taskstream-Resumed-From` "
            "equals the cursor sent. U, G and D have no resume (replay n/a): they get one more "
            "event per user once all are open, and *all got an event* = when the last stream "
            "received it; the events produced while they were away are lost to them (gaps). "
            "Target: all caught up ≤ 3 s.",
            "",
        )
        rows = []
        u = self.t.get("U", {}).get("m5")
        for k in self.keys:
            m = self.t[k].get("m5") if self.ok(k) else None
            if not m:
                rows.append([self.label(k), "-"] + [""] * 8)
                continue
            replay = m.get("replay")
            rows.append(
                [
                    self.label(k),
                    f"{fmt(m['opened'])} / {fmt(m['clients'])}",
                    fmt(m["all_open_s"], 2),
                    ratio(m["all_open_s"], u["all_open_s"] if u else None),
                    fmt(m["all_caught_up_s"], 2)
                    if replay and m.get("all_caught_up_s") is not None
                    else (
                        f"not all: {fmt(m.get('caught_up'))} of {fmt(m['clients'])}"
                        if replay
                        else "n/a (no replay)"
                    ),
                    f"{fmt(m.get('resumed_header'))} / {fmt(m.get('resets'))}" if replay else "n/a",
                    fmt(m["all_first_event_s"], 2),
                    f"{fmt(m.get('gaps'))} / {fmt(m.get('dups'))}",
                    f"{fmt(m['connect_p50_ms'], 0)} / {fmt(m['connect_p99_ms'], 0)}",
                    fmt(m["connect_errors"]),
                ]
            )
        self.table(
            [
                "server",
                "reconnected",
                "all open, s",
                "÷ U (time)",
                "all caught up (replay), s",
                "resumed / stream-reset",
                "all got an event, s",
                "gaps / dups",
                "connect p50 / p99 ms",
                "errors",
            ],
            rows,
        )

    def m6(self) -> None:
        m6 = self.r.get("m6")
        self.add("## M6: ingest throughput with no clients, state writes on", "")
        if not m6 or "error" in m6:
            self.add(f"Not measured: {m6.get('error') if m6 else 'not run'}", "")
            return
        ts = m6.get("taskstream", [])
        if isinstance(ts, dict):  # results of a run before the 1/2/3-process cells
            ts = [{"procs": 1, "pinning": "CPU 1", "runs": [ts]}]
        reps = m6.get("reps", 1)
        self.add(
            f"Each cell drains {m6['events']:,} events keyed over the bench users from a "
            f"3-partition topic, "
            + (f"{reps} times; the cell is the median" if reps > 1 else "once")
            + (" with the range in brackets" if reps > 1 else "")
            + (
                " (some `consume_events` cells ran fewer times, to end inside the run's time "
                "budget; *drained* lists each run)"
                if m6.get("reps_cut")
                else ""
            )
            + ". The bare loop and the bridge read a pre-filled topic with a fresh group each "
            "time. `consume_events` (Kafka → PostgreSQL state writes → hot store → group_send → "
            "commit) runs as 1, 2 and 3 processes of one consumer group on a fresh topic: once "
            "the group is stable (all 3 partitions assigned) the processes are stopped "
            "(SIGSTOP), the events are produced, and they are continued (SIGCONT), so each "
            "repetition drains a pre-filled backlog with no start-up or rebalance in it. "
            "events/s = events committed ÷ seconds from SIGCONT to the last commit; CPU-µs per "
            "event = the processes' CPU over that interval, summed over the processes. A drain "
            f"stops after {m6.get('max_s', 0):g} s once a tenth of the events are committed (at "
            f"{3 * m6.get('max_s', 0):g} s in any case); its rate is then over what was "
            "committed (*drained* says how much).",
            "",
            "**Pinning on this 2-core box.** The bare loop, the bridge and the one-process "
            "`consume_events` run alone on CPU 1, with Redis, Kafka and PostgreSQL (and the "
            "producer) on CPU 0. Two and three processes float over both cores, which they "
            "share with those services: there is no third core, so the 3-process row says that "
            "three members share the partitions and what the box as a whole does, not how a "
            "third core would scale. With a core per process and the services on other "
            "machines the 2- and 3-process rows would differ (not measured here).",
            "",
        )
        bare = m6["bare"]
        bridge = m6["bridge"]
        bridge_per_s = median(bridge, "per_s")
        rows = [
            [
                "bare confluent-kafka `consume(500)` loop",
                "1",
                bare.get("pinning", "CPU 1"),
                med_range(bare, "per_s"),
                "-",
                ratio(median(bare, "per_s"), bridge_per_s),
                "-",
            ],
            [
                "bridge (consume → SSE frame → pipelined PUBLISH), the U/G/D ingest",
                "1",
                bridge.get("pinning", "CPU 1"),
                med_range(bridge, "per_s"),
                "-",
                "1.00x",
                "-",
            ],
        ]
        for cell in ts:
            runs = cell.get("runs", [])
            drained = (
                "; ".join(
                    f"{fmt(run['records'])} of {fmt(run['backlog'])} in {fmt(run['seconds'], 1)} s"
                    + (" (rebalanced)" if run.get("rebalanced") else "")
                    for run in runs
                )
                if runs and "backlog" in runs[0]
                else "-"
            )
            if cell.get("error") or any("error" in run for run in runs):
                drained += (
                    "; failed: "
                    + str(
                        cell.get("error") or next(run["error"] for run in runs if "error" in run)
                    )[:120]
                )
            rows.append(
                [
                    "Taskstream `consume_events`",
                    str(cell.get("procs", 1)),
                    cell.get("pinning", "-"),
                    med_range(cell, "per_s"),
                    med_range(cell, "cpu_us_per_event"),
                    ratio(median(cell, "per_s"), bridge_per_s),
                    drained,
                ]
            )
        self.table(
            [
                "ingest",
                "processes",
                "pinning",
                "events/s",
                "CPU-µs per event (summed)",
                "÷ bridge",
                "drained",
            ],
            rows,
        )

    def issue8(self) -> None:
        """Issue #8's before figures (quoted, from the full run on 5210924) next to this run."""
        t = self.t.get("T_uv", {})
        u = self.t.get("U", {})
        m6 = self.r.get("m6", {})
        one = m6_one(self.r)
        bridge = m6.get("bridge", {})
        bridge_per_s = median(bridge, "per_s") if "runs" in bridge else bridge.get("per_s")
        after_m6 = (
            f"{fmt(median(one, 'per_s'))} ({fmt(median(one, 'cpu_us_per_event'))})"
            if median(one, "per_s") is not None
            else "-"
        )

        def m2_at(target: dict[str, Any], rate: int) -> str:
            st = next((s for s in target.get("m2", []) if s["rate"] == rate), None)
            if not st:
                return "- (no such step in this run)"
            return f"{fmt(st['deliveries_per_s'])}, p99 {fmt(st['p99_ms'])}, {fmt(st['lost'])} lost"

        def layer_p50(target: dict[str, Any]) -> str:
            ly = target.get("m3", {}).get("layer", {})
            return fmt(ly["p50"] / 1000, 1) if ly.get("count") else "-"

        def stateful_p50(target: dict[str, Any]) -> str:
            sf = target.get("m3", {}).get("stateful", {})
            return fmt(sf["p50"] / 1000, 1) if sf.get("count") else "-"

        after = [
            (after_m6, f"bridge {fmt(bridge_per_s)}"),
            (m2_at(t, 1000), f"U {m2_at(u, 1000)}"),
            (
                ceiling_cell(self.ceiling("T_uv"), self.ceiling("U")) if t and u else "-",
                f"U {fmt(self.ceiling('U')[0]) if u and self.ceiling('U') else '-'}",
            ),
            (layer_p50(t), f"U {layer_p50(u)}; stateful floor {stateful_p50(t)}"),
        ]
        rows = [
            [metric, target, before, now, peer_before, peer_now]
            for (metric, target, before, peer_before), (now, peer_now) in zip(
                ISSUE8_BEFORE, after, strict=True
            )
        ]
        quick = self.r["mode"] == "quick"
        self.add(
            "## Issue #8: before / after (ingest)",
            "",
            f"*Before*: the figures issue #8 quotes from a full `make bench` run on "
            f"{full_hash(ISSUE8_COMMIT)} (the ingest code before the #8 work), copied here from "
            "the issue; they were not measured by this run. *This run*: Taskstream under "
            "uvicorn (M6 needs no server) and the peers, measured now"
            + (
                "; this is a quick run (shorter steps, fewer events, no 1,000 events/s M2 "
                "step), so it is not comparable with the full-run before column."
                if quick
                else "."
            ),
            "",
        )
        self.table(
            [
                "metric",
                "target (issue #8)",
                f"Taskstream before ({ISSUE8_COMMIT}, issue #8)",
                "Taskstream this run",
                "peer before (issue #8)",
                "peer this run",
            ],
            rows,
        )

    def ingest_profile(self) -> None:
        """What py-spy showed of consume_events before and after the #8 work (written by
        hand from `bench/profile_ingest.py` runs; the numbers above are measured)."""
        self.add(
            "### Where ingest's CPU went (py-spy, `bench/profile_ingest.py`)",
            "",
            "Before (5210924, 20,000-event drain, share of consume_events' CPU): one "
            "`UPDATE` per task through the ORM 23 %, a `group_send` per user per batch "
            "~10 %, four Redis commands per event 6 %, `bulk_create` 6 %. The fixes, in "
            "the order the profile asked for them:",
            "",
            "1. `tasks/apply.py` + `tasks/postgres.py`: two SELECTs, one INSERT and one "
            "`UPDATE … FROM unnest(…)` per batch. A first version with multi-row "
            "`VALUES` lists spent its time in psycopg splitting a 100 KB statement text per "
            "batch (not cached above 4 KB); a second, with client-side binding of arrays, "
            "in quoting array literals in Python. Server-side binding with binary arrays "
            "(`%b`) moved that into psycopg's C code: 408 → 162 CPU-µs per event on a "
            "10,000-event drain (loaded machine).",
            "2. `realtime/store.py`: the hot store's 2,000 pipelined commands per batch "
            "(most of the event loop's time went to packing and parsing their replies) "
            "became one Lua call with one JSON argument per batch.",
            "3. `realtime/bus.py`: 16 shard groups instead of a group per user (a batch "
            "of 500 users made 500 `group_send`s); plain tuples on the wire.",
            "4. Bodies encoded once per event with orjson and reused by the store and the "
            "bus; strict JSON parsed by orjson, whose refusals (NaN, infinities, lone "
            "surrogates) leave only NUL and depth to check in Python; hiredis parses "
            "Redis replies.",
            "",
            "After those: 135 CPU-µs per event (loaded machine), spread over validation "
            "(~15 %), the Lua call (~14 %), the shard sends (~11 %) and the database "
            "statements (~10 %); 179 CPU-µs and 3,341 events/s in the quiet full run.",
            "",
            "Second round (py-spy on 100,000-event drains, `bench/profile_ingest.py`, "
            "`PROFILE_SECONDS=40`; CPU measured with `time.process_time` in interleaved "
            "runs, because the machine was shared):",
            "",
            "5. Per-batch costs: batches of up to 1,000 records instead of 500 "
            "(`TASKSTREAM_CONSUMER_BATCH`): a batch costs a fixed 16 `group_send`s, two "
            "database round trips and one commit whatever its size, and several events of "
            "one task collapse into one row update (2,000 measured 133 → 91 CPU-µs per "
            "event on the quick drain, but one user's events of a batch must fit a "
            "stream's 1,000-item buffer, so the default stops at 1,000; settings refuse "
            "a batch over `TASKSTREAM_STREAM_QUEUE_SIZE`).",
            "6. Overlap: a two-stage pipeline in `realtime/ingest.py` (read, adapt and apply "
            "the next batch while the last is stored, pushed and committed), so the "
            "database's time on the other core no longer adds to the Redis and layer time.",
            "7. The apply's database CPU: psycopg's array dumpers and row loaders walk "
            "every element in Python, half of the apply's CPU. The batch's rows now travel "
            "as one JSON text written by orjson and read with `jsonb_array_elements`; the "
            "locked tasks come back as one JSON text: 86 → 29-40 ms of CPU per "
            "2,000-event apply.",
            "8. Round trips: BEGIN, two SELECTs, INSERT, UPDATE and COMMIT were six round "
            "trips; now two query texts (BEGIN + reads; writes + COMMIT). psycopg's "
            "pipeline mode did the same in two round trips but ran its machinery per "
            "statement in Python; one `execute` per round trip in the simple protocol "
            "halved a one-event apply's CPU again: 2.2 → 0.7 ms per one-event batch.",
            "9. The adapter: a frozen dataclass sets each field through "
            "`object.__setattr__` (~3 µs per event for `TaskEvent`); `Position` and "
            "`Applied` are named tuples and `TaskEvent` a plain slotted dataclass; the "
            "depth walk runs only when the record holds more than 32 brackets (counted in "
            "C); UUIDs already in canonical form are kept as sent instead of re-formatted.",
            "",
            "Third round: with py-spy `--idle` (`PROFILE_IDLE=1`), most of the loop's wall "
            "time was the database thread waiting on PostgreSQL. Server time per event, "
            "measured per statement on 1,000-event batches of the bench schema:",
            "",
            "10. The event-log read (is any of these ids or positions logged?) cost 9 µs per "
            "event on an empty log and 50-100 µs on a 100,000-row one (random UUIDs probe "
            "the whole index). The INSERT's unique indexes check the same thing, so a batch "
            "is first applied assuming it is new, without the read; a re-read batch or a "
            "producer's retry fails the INSERT on a unique index and is decided again with "
            "the read (`tasks/apply.py`).",
            "11. The event log's foreign key to its task was a deferred trigger per row at "
            "COMMIT: 12.5 → 0.8 µs per event once dropped (the task is locked in the same "
            "transaction; Django's `on_delete` still cascades). Tasks at fillfactor 70: "
            "HOT updates 41 % → 99 %, the UPDATE writes no index entry.",
            "12. The UPDATE joined the batch's JSON rows against a sequential scan of every "
            "task (the planner assumes 100 rows for `jsonb_array_elements`); the ids as an "
            "array make it an index scan: a one-event UPDATE 2.2 → 0.57 ms, and its cost no "
            "longer grows with the tasks table.",
            "13. Overlap, again: a three-stage pipeline. What Kafka has buffered is read "
            "and adapted (the event loop's CPU) while the batch before it waits on "
            "PostgreSQL and the one before that is stored, pushed and committed.",
            "14. One bus shard instead of 16 (`realtime/bus.py`). Under M2's load the push "
            "was the slowest stage of a 70-event batch (35-60 ms): a `group_send` costs "
            "four Redis round trips and about a millisecond of Python whatever the message's "
            "size, and a batch of many users touched all 16 shards: 15 ms of CPU per batch, "
            "1.5 ms with one shard (`bus.publish` of 70 events measured alone). A server "
            "with 16 users or more was in every shard's group anyway.",
            "",
            "Server time per event on a 1,000-event batch after 10-12: lock 11-13 µs, "
            "INSERT 31-37 µs, UPDATE 17-20 µs, COMMIT 1 µs (was 12-22, 9-100, 31-37, "
            "20, 12-15).",
            "",
            "Fourth round, small batches (M2, M3). In the previous full run's M2, batches of "
            "6-25 events took 57-75 ms each from read to commit: on the core the ingest "
            "shares with Redis, Kafka and PostgreSQL, every sequential round trip also waits "
            "for the other side to be scheduled. Per 1-event batch (fake Kafka edge; real "
            "PostgreSQL, Redis and layer; medians of interleaved runs on a shared machine):",
            "",
            "15. The partitions' heads ride in the hot store's append script (a Redis round "
            "trip less), the commit is queued asynchronously (the Kafka thread, and the "
            "read behind it, no longer wait a broker round trip per batch; failures still "
            "counted, through `on_commit`), and the read-ahead of buffered records runs "
            "without a thread hop: 6.2 → 5.5 ms of CPU per batch.",
            "16. `group_send` in two Redis round trips instead of four "
            "(`realtime/layer.py`: the same keys and rules as channels-redis's, whose "
            "receive is unchanged): with one hub in the bus group, 6.3 → 5.6 ms.",
            "17. The read after a batch no longer takes only what is already buffered: if "
            "nothing is, it waits for the first records (on the Kafka thread, which the "
            "queued commit no longer needs; dead letters got a thread of their own), so a "
            "record that arrives while a batch is applied or finished is applied at once, "
            "not after that batch's commit (tests/test_consumer_loop.py). This run's M2 and "
            "M3 rows are its measure.",
            "18. Tried and dropped: each partition's events applied at once on their own "
            "connections. M6 did not move (7.0-7.7k against 6.9-8.2k events/s, "
            "interleaved): librdkafka hands out one partition's fetch at a time, so 28 of "
            "40 batches held one partition, and with 64 KiB partition fetches (56 of 82 "
            "batches spanning all three) the consumer's own core, not PostgreSQL, was the "
            "limit.",
            "",
            "Fifth round, pacing (M2, M1). In M2 the ingest took 30-35 % of the shared core "
            "and the server 15-17 % of its own at every offered rate from 250 to 2,000 "
            "events/s: read as eagerly as possible, a flow of a few hundred events/s came as "
            "batches of 1-5 events, about 50 a second, and each batch costs about 6 ms of the "
            "ingest's CPU (1-event batches, fake Kafka edge: apply 2.3, hot store 1.5, "
            "`group_send` 2.0, the rest 0.6), its PostgreSQL transaction, its Redis calls, and "
            "one wake of every server's streams for its layer message. The shared core ran at "
            "100 % and every stage queued behind the others:",
            "",
            "19. `consume_events` paces its reads (`TASKSTREAM_CONSUMER_LINGER_MS`, 50 ms): "
            "while records keep coming, at most one batch per 50 ms; a record after a quiet "
            "spell (an isolated event, M3) and the batch after a full one (a backlog, M6) are "
            "read at once (tests/test_consumer_pacing.py). Interleaved M1+M2+M3 runs on a "
            "shared machine, linger 0 / 25 / 50 ms: M2 250/s ingest CPU 33-36 / 27-30 / "
            "15-17 %, server 14-16 / 12-13 / 7-8 %, p99 115-143 / 59-203 / 81-108 ms; M2 "
            "1,000/s p99 139-1,311 / 279-1,655 / 126-283 ms; M1 50/s 27.7-30.1k / "
            "37.9-42.5k / 47.7-48.3k deliveries/s at 31-34 / 22-25 / 17-20 CPU-µs each (p99 "
            "1.7-2.0 s / 0.49-0.90 s / 135-188 ms); M1 100/s with 50 ms: 94.5-96.1k at "
            "9.4-9.8 µs, p99 231-332 ms (2 of 4 within 250). M3 (events 200 ms apart) is not "
            "paced. "
            "M6 drains (all batches full) 5.2-6.4k without, 4.8-5.2k with, same conditions; "
            "no batch of those drains was paced.",
            "20. The adapter checks a record in the plain shape producers send (the eight "
            "fields, canonical UUIDs, a UTC timestamp, `data` as its type wants) with a few "
            "comparisons; any other record goes through the pydantic models as before "
            "(tests/test_adapter_plain.py: on 1,810 mutated records the plain path accepts "
            "only what the models accept, with the same values). `adapt` 10.0 → 7.4 µs per "
            "record.",
            "21. `group_send` in one Redis round trip while the group's members stay the "
            "same (one script compares them with the last send's and sends, else returns "
            "them and the client sends again): 301-329 → 199-245 µs per send alone; M3's "
            "layer probe did not move beyond its noise (6.3-8.5 against 6.0-8.3 ms, six "
            "interleaved pairs). M3's stage floor is Kafka, a committed PostgreSQL "
            "transaction and two Redis calls (bench/notes.md).",
            "",
        )

    def m7(self) -> None:
        m7_section(self)

    def before_after(self) -> None:
        """Taskstream's key numbers: the first full run (before the hot-path fixes) and this."""
        path = ROOT / "bench" / BEFORE
        if self.r["mode"] != "full" or not path.exists():
            return
        before = json.loads(path.read_text())
        after = key_numbers(self.r)
        cfg = self.r["cfg"]
        env = self.r.get("env", {})
        self.add(
            "## Before / after the hot-path fixes (Taskstream)",
            "",
            f"*Before*: the first full run, {before['_measured']}. *After*: this run, "
            f"git {full_hash(env.get('git'))}"
            + (
                f" with {env.get('dirty_core_files')} uncommitted files under realtime/ tasks/ "
                "config/"
                if env.get("dirty_core_files")
                else " (no uncommitted changes under realtime/ tasks/ config/)"
            )
            + ", which includes a88876d (plain per-task UPDATE instead of `bulk_update`; "
            "`consume_events` takes buffered records at once instead of waiting out its poll "
            "timeout; a Redis pool that waits instead of failing past 100 connections). "
            "Same rates, stream counts and payload in both; to fit the 15-minute budget this "
            f"run's steps are shorter (M1/M2 steps {cfg['step_s']:g} s instead of 3, M3 "
            f"{cfg['m3_s']:g} s instead of 12, M7 {cfg.get('reps', 1)} x {cfg['m7_s']:g} s per "
            f"part instead of 8 s, M4 window {cfg['m4_window']:g} s instead of 4, M4 opening "
            f"bounded to {cfg['m4_open_s']:g} s per size instead of 120 s). M5 changed meaning: "
            "*before* was a plain reconnect storm (replay was not built yet), *after* is the "
            "storm with `Last-Event-ID` replay.",
            "",
        )
        rows = []
        for metric, target, key in KEY_ROWS:
            row = [metric, target]
            for t in ("T_uv", "T_daphne"):
                row += [before.get(t, {}).get(key, "-"), after.get(t, {}).get(key, "-")]
            rows.append(row)
        self.table(
            [
                "metric",
                "target",
                "uvicorn before",
                "uvicorn after",
                "daphne before",
                "daphne after",
            ],
            rows,
        )

    def render(self) -> str:
        self.header()
        self.issue8()
        self.ingest_profile()
        self.before_after()
        self.m1_m2("m1", "broadcast fan-out", "deliveries/s")
        self.m1_m2("m2", "targeted delivery, one user per stream", "events/s")
        self.m3()
        self.m4()
        self.m5()
        self.m6()
        self.m7()
        noisy_section(self)
        notes = ROOT / "bench" / "notes.md"
        if notes.exists():
            self.add(notes.read_text())
        return "\n".join(self.lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="quick")
    ap.add_argument(
        "--save-before",
        metavar="RESULTS_JSON",
        help="write bench/" + BEFORE + " from a results file, then exit",
    )
    ap.add_argument("--measured", default="", help="with --save-before: what was measured")
    args = ap.parse_args()
    if args.save_before:
        numbers: dict[str, Any] = key_numbers(json.loads(Path(args.save_before).read_text()))
        numbers["_measured"] = args.measured
        (ROOT / "bench" / BEFORE).write_text(json.dumps(numbers, indent=1) + "\n")
        return
    results = json.loads((ROOT / "bench" / ".build" / f"results-{args.mode}.json").read_text())
    (DOCS / "benchmarks.md").write_text(Report(results).render())
    print(f"wrote {DOCS / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
