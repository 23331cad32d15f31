"""Applying ``consume_events``' batches to task state, in Kafka's order, two at a time.

On PostgreSQL a batch's apply begins while the batch before it is still being written,
each on its own thread and connection; ``tasks.turns`` keeps their order. That first
attempt (``tasks.apply_turn``) assumes the batch is new and clean, and takes the tasks the
batch before holds as that batch decided them. If it cannot commit (a logged event, data
PostgreSQL refuses, a task changed meanwhile), it rolls back and the batch is applied again
here, alone and in the order (``realtime.isolation``: retried with the log, or bisected).
On other databases (the embedded SQLite) batches are applied one at a time, on Django's
database thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from channels.db import DatabaseSyncToAsync, database_sync_to_async
from django.db import connections

from realtime.isolation import OUTAGES, apply_isolating
from streaming.events import TaskEvent
from tasks.apply import Applied
from tasks.turns import BeforeFailed, Turn

Refused = list[tuple[TaskEvent, str]]

logger = logging.getLogger("realtime.ingest")


class Applier:
    """``apply`` applies a batch alone (``tasks.apply.apply_events``); ``attempt`` makes a
    batch's first attempt in its turn (``tasks.apply_turn.apply_in_turn``)."""

    def __init__(
        self,
        epoch: str,
        *,
        apply: Callable[..., list[Applied]],
        attempt: Callable[..., list[Applied]],
        overlap: bool,
    ) -> None:
        # Attempts that wait on each other need threads (and connections) of their own.
        self._threads = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"apply-{i}")
            for i in range(2 if overlap else 0)
        ]
        self._attempts = [
            DatabaseSyncToAsync(
                functools.partial(attempt, epoch=epoch), thread_sensitive=False, executor=thread
            )
            for thread in self._threads
        ]
        # Applies again, alone: never queued behind an attempt that waits for this one.
        self._alone = database_sync_to_async(functools.partial(apply, epoch=epoch))
        self._next = 0

    def turn(self, after: Turn | None) -> Turn | None:
        """A batch's turn, after the turn of the batch before it if that one is still in
        flight (``after``); None where applies do not overlap."""
        return Turn(after) if self._attempts else None

    async def apply(
        self,
        events: list[TaskEvent],
        turn: Turn | None,
        before: Callable[[], Awaitable[bool]] | None,
    ) -> tuple[list[Applied], Refused]:
        """Apply ``events``; return the outcomes and the events the database refuses.
        ``before`` waits until the batch before is applied and says whether it was (none
        in flight: None). Raises ``BeforeFailed`` if it was not; this batch is then not
        applied either, and the caller reads both again."""
        if turn is None:
            await _applied(before)
            return await apply_isolating(self._alone, events)
        try:
            attempt = self._attempts[self._next]
            self._next = (self._next + 1) % len(self._attempts)
            try:
                applied = await attempt(events, turn=turn)
            except BeforeFailed:
                raise
            except OUTAGES:
                raise
            except Exception as exc:  # applied again alone, which decides
                # Expected after a restart (logged events) and for data PostgreSQL refuses.
                logger.info("batch of %d applied again alone: %r", len(events), exc)
            else:
                turn.end(committed=True)
                return applied, []
            await _applied(before)
            result = await apply_isolating(self._alone, events)
            turn.end(committed=True)
            return result
        finally:
            turn.end(committed=False)  # a no-op once ended

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for thread in self._threads:
            await loop.run_in_executor(thread, connections.close_all)  # that thread's own
            thread.shutdown(wait=True)


async def _applied(before: Callable[[], Awaitable[bool]] | None) -> None:
    """Until the batch before (if any is in flight) is applied; ``BeforeFailed`` if not."""
    if before is not None and not await before():
        raise BeforeFailed
