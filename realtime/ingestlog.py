"""What ``consume_events`` logs, and how cheaply: per batch, not per event.

Each batch binds its context (``batch_size``, its Kafka ``positions``) for every line
logged while it runs, and ends with one ``batch`` line: the outcome (``committed`` or
``retried``), counts per outcome and its duration. One line per record (position, task,
user, event type, outcome, ``traceparent``) is written only when TASKSTREAM_LOG_RECORDS is
on; the check is made once per batch. A dead-lettered record always gets its warning, with
its position, reason and trace context (docs/operations.md, "Logs").
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog

from streaming import tracecontext, tracing

if TYPE_CHECKING:
    from realtime.ingest import BatchResult
    from tasks.apply import Applied

RECORDS_LOGGER: Final = "realtime.ingest.records"

log = structlog.get_logger("realtime.ingest")
records_log = structlog.get_logger(RECORDS_LOGGER)
_records_std = logging.getLogger(RECORDS_LOGGER)


def positions(records: Sequence[Any]) -> str:
    """``topic:partition:first-last`` of each partition in the batch (records of a
    partition come in offset order)."""
    spans: dict[tuple[str, int], list[int]] = {}
    for record in records:
        offset = record.offset()
        span = spans.setdefault((record.topic(), record.partition()), [offset, offset])
        span[1] = offset
    return ",".join(f"{t}:{p}:{first}-{last}" for (t, p), (first, last) in spans.items())


@contextlib.contextmanager
def batch(records: Sequence[Any], result: BatchResult) -> Iterator[None]:
    """The context, span and closing line of one batch of ``records``."""
    started = time.monotonic()
    outcome = "error"
    context = {"batch_size": len(records), "positions": positions(records)}
    traces = (tracecontext.from_headers(r.headers()) for r in records)  # read if tracing
    with (
        structlog.contextvars.bound_contextvars(**context),
        tracing.span("consume_events batch", traces, records=len(records)),
    ):
        try:
            yield
            outcome = "retried" if result.retried else "committed"
        finally:
            log.info(
                "batch",
                outcome=outcome,
                delivered=result.delivered,
                dead_lettered=result.dead_lettered,
                outcomes=result.outcomes,
                ms=round((time.monotonic() - started) * 1000, 1),
            )


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


def dead_letters(dead: Sequence[tuple[Any, str]]) -> None:
    """A warning per record about to go to the dead-letter topic, with its reason."""
    for record, reason in dead:
        log.warning(
            "dead-lettering",
            topic=record.topic(),
            partition=record.partition(),
            offset=record.offset(),
            reason=reason,
            **trace_fields(tracecontext.from_headers(record.headers())),
        )


def trace_fields(traceparent: str | None) -> dict[str, str]:
    """``traceparent`` and its ``trace_id`` (what tracing backends search by), if any."""
    if traceparent is None:
        return {}
    return {"traceparent": traceparent, "trace_id": tracecontext.trace_id(traceparent)}
