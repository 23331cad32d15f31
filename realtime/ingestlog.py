"""What ``consume_events`` logs, and how cheaply: per batch, not per event.

Each batch (``BatchLog``) binds its context (``batch_size``, its Kafka ``positions``) for
every line logged while it runs, and ends with one ``batch`` line: the outcome
(``committed`` or ``retried``), counts per outcome and its duration. One line per record
(position, task, user, event type, outcome, ``traceparent``) is written only when
TASKSTREAM_LOG_RECORDS is on; the check is made once per batch. A dead-lettered record
always gets its warning, with its position, reason and trace context (docs/operations.md,
"Logs"), and is counted in ``taskstream_consumer_dead_letters_total`` by the class of its
reason (a bounded label: the reasons themselves quote the records) once its batch is
committed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog

from streaming import metrics, tracecontext, tracing

if TYPE_CHECKING:
    from realtime.ingest_batch import BatchResult
    from tasks.apply import Applied

RECORDS_LOGGER: Final = "realtime.ingest.records"

log = structlog.get_logger("realtime.ingest")
records_log = structlog.get_logger(RECORDS_LOGGER)
_records_std = logging.getLogger(RECORDS_LOGGER)

# (how a reason starts, its class), first match wins; anything else the adapter refused
# breaks the record contract (docs/events.md).
REASON_CLASSES: Final = (
    ("unknown user", "unknown-user"),
    ("unknown task", "unknown-task"),
    ("task belongs to another user", "wrong-owner"),
    ("position used by another event", "position-reused"),
    ("database refused it", "database-refused"),
    ("adapter error", "adapter-error"),
    ("record has no key", "key"),
    ("key ", "key"),
)


def reason_class(reason: str) -> str:
    """The bounded class of a dead-letter reason, for a metric label."""
    if reason.endswith("-byte limit"):
        return "too-large"
    return next((c for start, c in REASON_CLASSES if reason.startswith(start)), "contract")


def positions(records: Sequence[Any]) -> str:
    """``topic:partition:first-last`` of each partition in the batch (records of a
    partition come in offset order)."""
    spans: dict[tuple[str, int], list[int]] = {}
    for record in records:
        offset = record.offset()
        span = spans.setdefault((record.topic(), record.partition()), [offset, offset])
        span[1] = offset
    return ",".join(f"{t}:{p}:{first}-{last}" for (t, p), (first, last) in spans.items())


class BatchLog:
    """One batch's log context, dead-letter tally and spans, across its stages (read and
    adapted; applied; stored, pushed and committed: ``realtime.ingest``)."""

    __slots__ = ("context", "dead", "span", "started")

    def __init__(self) -> None:
        self.context: dict[str, Any] = {}
        self.dead: Counter[str] = Counter()
        self.span: Any = None
        self.started = time.monotonic()

    def begin(self, records: Sequence[Any]) -> None:
        self.context = {"batch_size": len(records), "positions": positions(records)}
        traces = (tracecontext.from_headers(r.headers()) for r in records)  # read if tracing
        self.span = tracing.start("consume_events batch", traces, records=len(records))

    @contextlib.contextmanager
    def stage(self, name: str, **attributes: Any) -> Iterator[None]:
        """Every line logged in the block carries the batch's context; a span ``name``."""
        with (
            structlog.contextvars.bound_contextvars(**self.context),
            tracing.span(name, parent=self.span, **attributes),
        ):
            yield

    def dead_letters(self, dead: Sequence[tuple[Any, str]]) -> None:
        """A warning per record about to go to the dead-letter topic, with its reason."""
        with structlog.contextvars.bound_contextvars(**self.context):
            for record, reason in dead:
                self.dead[reason_class(reason)] += 1
                log.warning(
                    "dead-lettering",
                    topic=record.topic(),
                    partition=record.partition(),
                    offset=record.offset(),
                    reason=reason,
                    **trace_fields(tracecontext.from_headers(record.headers())),
                )

    def end(self, result: BatchResult) -> None:
        """The batch's line, once it is committed or given up to be read again; its dead
        letters are counted when it is committed (a batch read again is counted once)."""
        outcome = "retried" if result.retried else "committed"
        if outcome == "committed":
            for name, count in self.dead.items():
                metrics.CONSUMER_DEAD_LETTERS.labels(name).inc(count)
        with structlog.contextvars.bound_contextvars(**self.context):
            log.info(
                "batch",
                outcome=outcome,
                delivered=result.delivered,
                dead_lettered=result.dead_lettered,
                outcomes=result.outcomes,
                ms=round((time.monotonic() - self.started) * 1000, 1),
            )
        tracing.end(self.span)
        self.span = None


def record_lines(applied: Sequence[Applied]) -> None:
    """One ``record`` line per event applied (or not), when TASKSTREAM_LOG_RECORDS is on."""
    if not _records_std.isEnabledFor(logging.INFO):
        return
    for item in applied:
        event = item.event
        pos = event.position
        records_log.info(
            "record",
            topic=pos.source,
            partition=pos.partition,
            offset=pos.offset,
            task_id=event.task_id,
            user_id=event.user_id,
            event_id=event.event_id,
            event_type=event.event_type,
            outcome=item.outcome.value,
            delivered=item.deliver,
            **trace_fields(event.traceparent),
        )


def trace_fields(traceparent: str | None) -> dict[str, str]:
    """``traceparent`` and its ``trace_id`` (what tracing backends search by), if any."""
    if traceparent is None:
        return {}
    return {"traceparent": traceparent, "trace_id": tracecontext.trace_id(traceparent)}
