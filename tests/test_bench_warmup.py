"""bench/warmup.py: when the broker counts as warm (three windows in a row agree)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.conftest import ROOT


def load() -> ModuleType:
    # bench/ is a directory of scripts, not a package: load the module by its path.
    spec = importlib.util.spec_from_file_location("bench_warmup", ROOT / "bench" / "warmup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_warmup"] = module
    spec.loader.exec_module(module)
    return module


warmup = load()


def settled_after(p50_ms: list[float], cpu_pct: list[float]) -> int | None:
    """The number of windows after which the warm-up stops, or None."""
    for n in range(1, len(p50_ms) + 1):
        if warmup._settled(p50_ms[:n][-3:], cpu_pct[:n][-3:], 3, 0.15, 10.0):
            return n
    return None


def test_a_broker_just_started_settles_once_latency_and_cpu_stop_falling() -> None:
    # Measured on the bench host right after a restart (bench/notes.md).
    p50 = [11.5, 5.2, 3.8, 3.1, 2.9, 2.8, 3.0]
    cpu = [86.0, 80.0, 65.0, 40.0, 29.0, 30.0, 23.0]
    # Windows 4-6 agree on latency, but the CPU still fell from 40 to 29 %.
    assert settled_after(p50, cpu) == 7


def test_latency_still_falling_is_not_settled() -> None:
    assert settled_after([9.9, 4.0, 3.3, 3.2, 2.8], [20.0] * 5) is None


def test_a_warm_broker_settles_after_three_windows() -> None:
    assert settled_after([2.8, 2.7, 2.7], [31.0, 24.0, 22.0]) == 3


def test_without_the_broker_cpu_latency_alone_decides() -> None:
    # An external broker: no pid, every window's CPU reads 0.
    assert settled_after([4.0, 3.1, 3.0, 2.9], [0.0] * 4) == 4
