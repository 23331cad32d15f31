"""What is delivered, and to whom: the one rule, used by every path that delivers.

An event goes to the streams of its ``user_id``, and only there, exactly when the event log
(``TaskEventLog``) records its event id at its own Kafka position. ``apply_events`` writes
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

# event id -> (source, partition, offset) where the log recorded it
LoggedPositions = Mapping[str, tuple[str, int, int]]

_QUERY_CHUNK = 1000


def is_delivered(event: TaskEvent, logged: LoggedPositions) -> bool:
    """The rule. ``logged`` must hold the log's entry for ``event.event_id``, if any."""
    pos = event.position
    return logged.get(event.event_id) == (pos.source, pos.partition, pos.offset)


def recipient(event: TaskEvent) -> int:
    """Whose streams a delivered event goes to: its owner's (the log holds only events
    whose user owns the task)."""
    return event.user_id


def logged_positions(event_ids: Sequence[str]) -> dict[str, tuple[str, int, int]]:
    """Where the log recorded each of ``event_ids`` (absent: not recorded)."""
    found: dict[str, tuple[str, int, int]] = {}
    for start in range(0, len(event_ids), _QUERY_CHUNK):
        chunk = event_ids[start : start + _QUERY_CHUNK]
        for event_id, source, partition, offset in TaskEventLog.objects.filter(
            event_id__in=chunk
        ).values_list("event_id", "source", "partition", "offset"):
            found[str(event_id)] = (source, partition, offset)
    return found


def deliverable(events: Sequence[TaskEvent]) -> list[bool]:
    """For events read back from Kafka: whether each was delivered (one query per 1,000)."""
    logged = logged_positions([e.event_id for e in events])
    return [is_delivered(e, logged) for e in events]
