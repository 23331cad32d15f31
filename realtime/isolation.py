"""Which events of a batch the database refuses: the batch is applied whole, and only if
PostgreSQL refuses its data is it bisected down to the events to blame (dead-lettered
with the database's message) while the rest apply, in order. An outage is not a refusal:
it propagates, and the consumer reads the whole batch again later."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import redis.exceptions
from django.db import InterfaceError, OperationalError

from realtime.ingest_kafka import DeadLetterError
from streaming import metrics
from streaming.events import TaskEvent
from tasks.apply import Applied

logger = logging.getLogger("realtime.ingest")

# A dependency that is down, not a record that is bad: retry the batch, blame no record.
OUTAGES: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    DeadLetterError,
)

Apply = Callable[[list[TaskEvent]], Awaitable[list[Applied]]]


async def apply_isolating(
    apply: Apply, events: list[TaskEvent]
) -> tuple[list[Applied], list[tuple[TaskEvent, str]]]:
    """Apply ``events``; if the database refuses the batch's data, bisect it and return
    the events it refuses (with its message) instead of failing the rest."""
    if not events:
        return [], []
    try:
        return await apply(events), []
    except OUTAGES:
        raise
    except Exception as exc:
        if len(events) > 1:
            middle = len(events) // 2
            left = await apply_isolating(apply, events[:middle])
            right = await apply_isolating(apply, events[middle:])
            return left[0] + right[0], left[1] + right[1]
        refusal = exc
    # One event left. A unique-key race with another consumer during a rebalance resolves
    # on a second try (the event is then a redelivery); data does not.
    try:
        return await apply(events), []
    except OUTAGES:
        raise
    except Exception:
        event = events[0]
        logger.warning(
            "database refused event %s at %s: %s", event.event_id, event.position, refusal
        )
        metrics.CONSUMER_ISOLATED.inc()
        return [], [(event, f"database refused it: {type(refusal).__name__}: {refusal}"[:1000])]
