"""How a stream turns stored events into SSE frames: one cursor, advanced per event.

Every frame's ``id:`` is the whole cursor after that event (streaming.cursor), not the
event's own position, so the ids depend on what was delivered before. The stream and
``manage.py replay_events --dry-run`` both build frames here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable

from realtime.bus import BusItem
from realtime.store import UNKNOWN_PREV, StoredEvent
from streaming.cursor import UNKNOWN_EPOCH, Cursor


def next_frame(cursor: Cursor, item: BusItem) -> str:
    """Advance ``cursor`` past ``item`` and return its frame (the caller has checked that
    the cursor had not passed it)."""
    cursor.advance(item.source, item.partition, item.offset, item.epoch)
    return f"id: {cursor}\n{item.body}"


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


def replayed(events: Iterable[StoredEvent], epoch: str | None) -> list[BusItem]:
    """Replayed events as items for the stream's ``_deliver``: in order and contiguous by
    construction, so their ``prev`` is not checked (a replay from an incomplete store must
    not look for holes it has already accepted)."""
    epoch = epoch or UNKNOWN_EPOCH
    return [BusItem(e.source, e.partition, e.offset, UNKNOWN_PREV, epoch, e.body) for e in events]
