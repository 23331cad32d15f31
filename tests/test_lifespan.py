"""What the served process does at start-up (realtime.lifespan)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from realtime.lifespan import YOUNG_THRESHOLD, lifespan_application


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def test_start_up_freezes_and_collects_young_objects_less_often(restored_gc: None) -> None:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        assert message["type"] != "lifespan.startup.complete" or gc.get_freeze_count() > 0
        sent.append(message)

    default = gc.get_threshold()
    await lifespan_application({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert gc.get_threshold() == (YOUNG_THRESHOLD, default[1], default[2])
    assert default[0] < YOUNG_THRESHOLD
