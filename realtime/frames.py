"""How a stream turns stored events into SSE frames: one cursor, advanced per event.

Every frame's ``id:`` is the whole cursor after that event (streaming.cursor), not the
event's own position, so the ids depend on what was delivered before. The stream and
``manage.py replay_events --dry-run`` both build frames here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable

from realtime.bus import BusItem
from realtime.runs import Run, runs_of
from realtime.store import UNKNOWN_PREV, StoredEvent
from streaming.cursor import UNKNOWN_EPOCH, Cursor


def next_frame(cursor: Cursor, item: BusItem) -> str:
    """Advance ``cursor`` past ``item`` and return its frame (the caller has checked that
    the cursor had not passed it)."""
    cursor.advance(item.source, item.partition, item.offset, item.epoch)
    return f"id: {cursor}\n{item.body}"


def takes_whole(cursor: Cursor, run: Run) -> bool:
    """Write ``run.data`` (the frames shared by every stream, realtime.runs) and advance
    ``cursor`` to the run's end, if that is exactly what writing the run item by item
    would do; else change nothing and return False.

    That holds when the cursor names only the run's partition, in the run's epoch (so each
    id, the cursor after the event, is the event's own position), the run's first offset is
    past what was sent (no duplicate), and its ``prev`` is not past it (no hole). Within the
    run ``runs_of`` has checked the rest once per process.
    """
    offsets = cursor.offsets
    if len(offsets) != 1 or cursor.epochs.get(run.source) != run.epoch:
        return False
    key = run.key
    sent = offsets.get(key)
    if sent is None or run.first <= sent:
        return False
    if run.first_prev != UNKNOWN_PREV and run.first_prev > sent:
        return False
    offsets[key] = run.last
    return True


def frames_after(cursor: Cursor, events: Iterable[StoredEvent], epoch: str | None) -> list[str]:
    """Advance ``cursor`` past each event it has not passed yet; return their frames.

    An event at or before the cursor's offset in its partition was already delivered and
    is skipped. ``epoch`` is the events' source epoch (``UNKNOWN_EPOCH`` when not known).
    """
    epoch = epoch or UNKNOWN_EPOCH
    frames: list[str] = []
    for e in events:
        if e.offset <= cursor.offsets.get((e.source, e.partition), -1):
            continue
        frames.append(
            next_frame(cursor, BusItem(e.source, e.partition, e.offset, e.prev, epoch, e.body))
        )
    return frames


def replayed(events: Iterable[StoredEvent], epoch: str | None) -> list[Run]:
    """Replayed events as runs for the stream's ``_deliver``: in order and contiguous by
    construction, so their ``prev`` is not checked (a replay from an incomplete store must
    not look for holes it has already accepted)."""
    epoch = epoch or UNKNOWN_EPOCH
    return runs_of(
        [BusItem(e.source, e.partition, e.offset, UNKNOWN_PREV, epoch, e.body) for e in events]
    )
