"""The epoch watch of a running consume_events (realtime/epoch_watch.py): a topic id that
changed stops the consumer; Kafka not answering does not. The real topic re-created under a
running process: tests/test_topic_recreated.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

from realtime.epoch_watch import EpochWatch
from streaming.kafka import EpochUnavailable


def answering(*answers: str | Exception) -> Callable[..., str]:
    given: Iterator[str | Exception] = iter(answers)

    def describe(topic: str, timeout: float, admin: Any) -> str:
        answer = next(given)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return describe


def test_the_same_id_or_no_answer_is_no_change_and_another_id_is() -> None:
    unavailable = EpochUnavailable("cannot describe topic t within 1s: broker down")
    watch = EpochWatch("t", "E1", 1.0, answering("E1", unavailable, "E2"), admin=object())
    assert watch.check()
    assert watch.check()  # Kafka did not answer: asked again next time, nothing stopped
    assert watch.changed_to is None
    assert not watch.check()
    assert watch.changed_to == "E2"


async def test_run_checks_until_the_id_changes_then_calls_back_once() -> None:
    watch = EpochWatch("t", "E1", 0.01, answering("E1", "E1", "E2"), admin=object())
    stops: list[str] = []
    await asyncio.wait_for(watch.run(lambda: stops.append("stop")), timeout=10)
    assert stops == ["stop"] and watch.changed_to == "E2"
