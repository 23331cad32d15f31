"""bench/stats.py: the median, range and noisy flag of a bench cell's repetitions."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.conftest import ROOT


def load() -> ModuleType:
    # bench/ is a directory of scripts, not a package: load the module by its path.
    spec = importlib.util.spec_from_file_location("bench_stats", ROOT / "bench" / "stats.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stats = load()


def step(p99: float, **kw: float) -> dict[str, float]:
    return {"p99_ms": p99, "lost": 0, "gaps": 0, "dups": 0, "deliveries_per_s": 1.0, **kw}


def test_median_of_odd_and_even_counts_ignores_none() -> None:
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([4.0, 1.0, None, 2.0, 3.0]) == 2.5
    assert stats.median([None]) is None
    assert stats.median([]) is None


def test_a_cell_is_noisy_when_its_range_reaches_past_15_percent_of_the_median() -> None:
    assert not stats.noisy([100.0, 90.0, 115.0])  # 15 % exactly: not past it
    assert stats.noisy([100.0, 84.0, 101.0])  # 16 % below
    assert stats.noisy([100.0, 100.0, 116.0])  # 16 % above
    assert stats.spread_pct([100.0, 80.0, 110.0]) == pytest.approx(20.0)


def test_one_repetition_or_a_zero_median_says_nothing_about_noise() -> None:
    assert stats.spread_pct([123.0]) is None
    assert not stats.noisy([123.0])
    assert stats.spread_pct([0.0, 0.0, 5.0]) is None


def test_cell_shows_median_range_and_noisy() -> None:
    assert stats.cell([1200.0, 1000.0, 1100.0]) == "1,100 (1,000-1,200)"
    assert stats.cell([10.0, 20.0, 10.5], 1) == "10.5 (10.0-20.0) noisy"
    assert stats.cell([7.25], 1) == "7.2"
    assert stats.cell([None, None]) == "-"


def test_median_run_takes_each_numeric_field_separately() -> None:
    runs = [step(30.0, p50_ms=5.0), step(10.0, p50_ms=9.0), step(20.0, p50_ms=1.0)]
    runs[0]["label"] = "first"  # type: ignore[assignment]
    m = stats.median_run(runs)
    assert (m["p99_ms"], m["p50_ms"], m["reps"], m["label"]) == (20.0, 5.0, 3, "first")
    assert stats.median_run([]) == {}


def test_rise_is_the_median_over_the_baseline_median_with_each_repetitions_range() -> None:
    base = [step(100.0), step(110.0), step(90.0)]
    during = [step(115.0), step(130.0), step(120.0)]
    r = stats.rise_summary(base, during)
    assert r["rise_pct"] == pytest.approx(20.0)
    assert (r["min_pct"], r["max_pct"]) == (pytest.approx(15.0), pytest.approx(30.0))
    assert not r["noisy"]
    assert stats.rise_summary([step(100.0), step(50.0), step(100.0)], during)["noisy"]
    assert stats.rise_summary([], during)["rise_pct"] is None


def test_best_step_is_the_fastest_that_passes() -> None:
    steps = [
        step(100.0, deliveries_per_s=1000.0),
        step(200.0, deliveries_per_s=5000.0),
        step(300.0, deliveries_per_s=9000.0),  # p99 over 250 ms
        step(10.0, deliveries_per_s=9500.0, lost=1),
    ]
    best = stats.best_step(steps)
    assert best is not None and best["deliveries_per_s"] == 5000.0
    assert stats.best_step(steps[2:]) is None


def load_report_reps() -> ModuleType:
    # report_reps imports its sibling ``stats`` as the bench scripts do (bench/ on the path).
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_report_reps", ROOT / "bench" / "report_reps.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_the_report_lists_every_repeated_cell_and_names_the_noisy_ones() -> None:
    reps = load_report_reps()
    m7 = {
        "baseline": {"runs": [step(100.0), step(102.0), step(98.0)]},
        "stalled": {"runs": [step(110.0), step(300.0), step(112.0)]},  # one hiccup: noisy
        "churn": {"p99_ms": 150.0},  # one step (not repeated): not listed
    }
    results = {
        "targets": {
            "T_uv": {
                "label": "Taskstream",
                "m7": m7,
                "m3": {"runs": [step(50.0, p50_ms=20.0), step(52.0, p50_ms=21.0)]},
                "m1_best": {"rate": 10.0, "runs": [step(90.0, deliveries_per_s=10_000.0)] * 3},
            }
        },
        "m6": {"bare": {"runs": [{"per_s": 1000.0}, {"per_s": 1500.0}, {"per_s": 1010.0}]}},
    }
    cells = {what: vs for _, what, vs, _ in reps.repeated_cells(results)}
    assert cells["M7 others' p99 ms, stalled"] == [110.0, 300.0, 112.0]
    assert "M7 others' p99 ms, churn" not in cells
    assert cells["M3 client p50 ms"] == [20.0, 21.0]
    assert cells["M1 max sustained (10/s step), deliveries/s"] == [10_000.0] * 3
    noisy = {what for what, vs in cells.items() if stats.noisy(vs)}
    assert noisy == {"M7 others' p99 ms, stalled", "M6 bare events/s"}
    assert reps.rise_cell(m7, "stalled") == "+12 % (+10 to +200) noisy"  # median 112
    assert reps.rise_cell(m7, "churn") == "+50 %"
    assert reps.rise_cell(m7, "dead") == "-"
