"""The demo task's parameters and their limits: one definition, for the API and the worker.

The API refuses params outside these limits (400) and the worker fails a task whose params
are outside them. ``MIN_STEP_MS`` is the API's floor only: one request must not make the
worker emit 10,000 events in a burst, but a request already queued before the floor (or
from another producer of ``task.requests``) still runs as it was accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_STEPS = 10_000
MIN_STEP_MS = 10
MAX_STEP_MS = 600_000


class BadParams(ValueError):
    pass


@dataclass
class DemoParams:
    steps: int
    step_ms: int
    fail_at: int | None

    @classmethod
    def parse(cls, params: dict[str, Any], *, min_step_ms: int = 0) -> DemoParams:
        steps = params.get("steps", 5)
        step_ms = params.get("step_ms", 500)
        fail_at = params.get("fail_at")
        if type(steps) is not int or not 1 <= steps <= MAX_STEPS:
            raise BadParams(f"steps must be an integer 1-{MAX_STEPS}")
        if type(step_ms) is not int or not min_step_ms <= step_ms <= MAX_STEP_MS:
            raise BadParams(f"step_ms must be an integer {min_step_ms}-{MAX_STEP_MS}")
        if fail_at is not None and (type(fail_at) is not int or not 1 <= fail_at <= steps):
            raise BadParams("fail_at must be an integer between 1 and steps")
        return cls(steps, step_ms, fail_at)
