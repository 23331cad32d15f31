"""Repetitions of a bench cell: the median, the range, and whether the cell is noisy.

A headline cell is measured ``reps`` times (``bench/run.py``, mode key ``reps``) and
reported as the median with the range; it is *noisy* when the range reaches further than
``NOISY_PCT`` % from the median on either side, i.e. when one repetition alone could have
moved the cell by more than that. With one repetition nothing can be said: not noisy, no range.

Pure functions only (``tests/test_bench_stats.py``); ``run.py`` and ``report.py`` import them
as a sibling module (both run as scripts from ``bench/``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

NOISY_PCT = 15.0


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None; the mean of the two middle ones for an
    even count; None for none."""
    vs = sorted(v for v in values if v is not None)
    if not vs:
        return None
    mid = len(vs) // 2
    return vs[mid] if len(vs) % 2 else (vs[mid - 1] + vs[mid]) / 2


def spread_pct(values: Iterable[float | None]) -> float | None:
    """How far the range reaches from the median, in % of the median (the larger side);
    None with fewer than two values or a zero median."""
    vs = [v for v in values if v is not None]
    m = median(vs)
    if len(vs) < 2 or not m:
        return None
    return 100 * max(m - min(vs), max(vs) - m) / abs(m)


def noisy(values: Iterable[float | None], limit: float = NOISY_PCT) -> bool:
    s = spread_pct(values)
    return s is not None and s > limit


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    """median, min, max, n, spread_pct and noisy of one cell's repetitions."""
    vs = [v for v in values if v is not None]
    return {
        "median": median(vs),
        "min": min(vs) if vs else None,
        "max": max(vs) if vs else None,
        "n": len(vs),
        "spread_pct": spread_pct(vs),
        "noisy": noisy(vs),
    }


def field_values(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in runs if isinstance(r.get(key), int | float)]


def median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One step-shaped dict whose every numeric field is the median of that field over
    ``runs`` (other fields from the first run), so code that reads one step reads medians."""
    if not runs:
        return {}
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = median(field_values(runs, key))
    out["reps"] = len(runs)
    return out


def rise_pct(before: float | None, after: float | None) -> float | None:
    """``after``'s change from ``before`` in % (None without a positive ``before``)."""
    if before is None or after is None or before <= 0:
        return None
    return 100 * (after / before - 1)


def rise_summary(
    base: Sequence[dict[str, Any]], during: Sequence[dict[str, Any]], key: str = "p99_ms"
) -> dict[str, Any]:
    """The rise of ``during``'s median over ``base``'s median, its range (each repetition of
    ``during`` over ``base``'s median) and whether either side is noisy."""
    b = median(field_values(base, key))
    d = field_values(during, key)
    rises = [r for r in (rise_pct(b, v) for v in d) if r is not None]
    return {
        "rise_pct": rise_pct(b, median(d)),
        "min_pct": min(rises) if rises else None,
        "max_pct": max(rises) if rises else None,
        "noisy": noisy(field_values(base, key)) or noisy(d),
    }


P99_OK_MS = 250.0


def passes(step: dict[str, Any]) -> bool:
    """A step passes at p99 ≤ 250 ms with nothing lost, no gaps and no duplicates."""
    return bool(
        step["p99_ms"] <= P99_OK_MS
        and step["lost"] == 0
        and step["gaps"] == 0
        and step["dups"] == 0
    )


def best_step(steps: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The highest step that passes (by delivered rate)."""
    ok = [s for s in steps if passes(s)]
    return max(ok, key=lambda s: s["deliveries_per_s"]) if ok else None


def cell(values: Sequence[float | None], digits: int = 0) -> str:
    """ "1,234" for one value; "1,234 (1,100-1,300)" for several; "noisy" appended when the
    range reaches past NOISY_PCT % of the median; "-" for none."""
    s = summary(values)
    if s["median"] is None:
        return "-"
    out = f"{s['median']:,.{digits}f}"
    if s["n"] > 1:
        out += f" ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"
    if s["noisy"]:
        out += " noisy"
    return out
