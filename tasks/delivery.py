"""What is delivered, and to whom: the one rule, used by every path that delivers.

An event goes to the streams of its ``user_id``, and only there, exactly when the event log
(``TaskEventLog``) records its event id at its own Kafka position: source, partition, offset
and the topic's epoch (offsets restart when the topic is re-created). ``apply_events`` writes
that record for every event ``consume_events`` accepts, and only after checking that the
user exists and owns the task; so:
- a record the adapter refused, or an event for an unknown user or task, or for another
  user's task, has no log entry: never delivered, by any path;
- a producer retry (the same event id at a later position) finds its id logged at the
  first position: delivered once, at the first;
- a record re-read after a crash finds itself logged at its own position: delivered again
  (streams drop positions they already sent).

The live path (``apply_events``' ``Applied.deliver``), a stream's Kafka replay
(``realtime.replay.kafka``) and ``manage.py replay_events`` all decide with
``is_delivered``; the replay paths read the log with ``deliverable``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streaming.events import TaskEvent
from tasks.models import TaskEventLog

# Where the log recorded an event: source, partition, offset, epoch.
LoggedPosition = tuple[str, int, int, str]
# event id -> where the log recorded it
LoggedPositions = Mapping[str, LoggedPosition]

_QUERY_CHUNK = 1000


def is_delivered(event: TaskEvent, logged: LoggedPositions, epoch: str | None) -> bool:
    """The rule, for ``event`` read from the topic in ``epoch``. ``logged`` must hold the
    log's entry for ``event.event_id``, if any. ``epoch`` None: not known (a hot store that
    lost its keys and has not seen ``consume_events`` start since); then the position
    compares without it."""
    where = logged.get(event.event_id)
    return where is not None and same_position(where, event, epoch)


def same_position(where: LoggedPosition, event: TaskEvent, epoch: str | None) -> bool:
    """Whether the log's ``where`` is ``event``'s own position in ``epoch``. A row logged
    before epochs were recorded (blank, tasks/migrations/0007) matches any epoch."""
    pos = event.position
    return (
        where[2] == pos.offset
        and where[1] == pos.partition
        and where[0] == pos.source
        and (epoch is None or where[3] in (epoch, ""))
    )


def recipient(event: TaskEvent) -> int:
    """Whose streams a delivered event goes to: its owner's (the log holds only events
    whose user owns the task)."""
    return event.user_id


def logged_positions(event_ids: Sequence[str]) -> dict[str, LoggedPosition]:
    """Where the log recorded each of ``event_ids`` (absent: not recorded)."""
    found: dict[str, LoggedPosition] = {}
    for start in range(0, len(event_ids), _QUERY_CHUNK):
        chunk = event_ids[start : start + _QUERY_CHUNK]
        for event_id, source, partition, offset, epoch in TaskEventLog.objects.filter(
            event_id__in=chunk
        ).values_list("event_id", "source", "partition", "offset", "epoch"):
            found[str(event_id)] = (source, partition, offset, epoch)
    return found


def deliverable(events: Sequence[TaskEvent], epoch: str | None) -> list[bool]:
    """For events read back from the topic in ``epoch``: whether each was delivered (one
    query per 1,000)."""
    logged = logged_positions([e.event_id for e in events])
    return [is_delivered(e, logged, epoch) for e in events]
