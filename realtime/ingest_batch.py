"""One batch of ``consume_events`` between the stages of its pipeline (``realtime.ingest``):
its records, the events adapted from them, and where each ends up (delivered, or to the
dead-letter topic with its reason)."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import NamedTuple

from realtime import ingest_kafka as kafka_side
from realtime import ingestlog
from realtime.ingest_kafka import Record
from streaming.adapter import InvalidRecord, adapt
from streaming.cursor import PartitionKey
from streaming.events import Position, TaskEvent
from tasks.apply import Applied, Outcome
from tasks.turns import Turn

logger = logging.getLogger("realtime.ingest")


@dataclass
class BatchResult:
    records: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    # The batch met an outage and will be read again (nothing of it was committed).
    retried: bool = False


@dataclass
class Batch:
    """Read and adapted, then applied, then stored, pushed and committed."""

    records: list[Record]
    result: BatchResult
    # Partitions revoked up to this batch's read (forgotten before it is stored).
    revoked: list[PartitionKey] = field(default_factory=list)
    events: list[TaskEvent] = field(default_factory=list)
    by_position: dict[Position, Record] = field(default_factory=dict)
    deliverable: list[TaskEvent] = field(default_factory=list)
    dead: list[tuple[Record, str]] = field(default_factory=list)
    # The outage that interrupted the batch (it is then rewound and read again).
    outage: BaseException | None = None
    log: ingestlog.BatchLog = field(default_factory=ingestlog.BatchLog)

    @functools.cached_property
    def spans(self) -> dict[PartitionKey, tuple[int, int]]:
        """The lowest and highest offset per partition: one pass over the records for the
        offsets check, the store's heads and the commit."""
        return kafka_side.spans(self.records)

    @property
    def heads(self) -> dict[PartitionKey, int]:
        """The highest offset read per partition."""
        return {key: high for key, (_, high) in self.spans.items()}

    def adapt(self) -> None:
        """Each record's event; a record the adapter refuses, for whatever reason, is that
        record's problem: it is kept for the dead-letter topic with the reason."""
        for record in self.records:
            try:
                event = adapt(record)
                self.events.append(event)
                self.by_position[event.position] = record
            except InvalidRecord as exc:
                self.dead.append((record, exc.reason))
            except Exception as exc:  # the adapter's bug is still this record's problem
                logger.exception("adapter failed on %s", kafka_side.where(record))
                self.dead.append((record, f"adapter error: {type(exc).__name__}: {exc}"[:1000]))

    def sort(self, applied: list[Applied], refused: list[tuple[TaskEvent, str]]) -> None:
        """The events' outcomes: the deliverable ones in order, the rejected and the refused
        ones (by the database) to the dead-letter topic with their reasons."""
        for event, reason in refused:
            self.dead.append((self.by_position[event.position], reason))
        outcomes = self.result.outcomes
        for item in applied:
            outcomes[item.outcome.value] = outcomes.get(item.outcome.value, 0) + 1
            if item.outcome is Outcome.REJECTED:
                self.dead.append((self.by_position[item.event.position], item.reason))
            elif item.deliver:
                self.deliverable.append(item.event)
        ingestlog.record_lines(applied)


class Flight(NamedTuple):
    """A batch in ``consume_events``' pipeline: its turn among the applies, its apply, and
    all of it (``done``: finished, or left unfinished by an outage, its own or one before)."""

    batch: Batch
    turn: Turn | None
    applied: asyncio.Task[None]
    done: asyncio.Task[None]

    async def was_applied(self) -> bool:
        await self.applied
        return self.batch.outage is None
