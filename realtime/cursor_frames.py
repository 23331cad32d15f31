"""How a stream turns stored events into SSE frames: one cursor, advanced per event.

Every frame's ``id:`` is the whole cursor after that event (realtime.cursor), not the
event's own position, so the ids depend on what was delivered before. The stream and
``manage.py replay_events --dry-run`` both build frames here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable

from realtime.cursor import Cursor
from realtime.store import StoredEvent


def frames_after(cursor: Cursor, events: Iterable[StoredEvent], epoch: str | None) -> list[str]:
    """Advance ``cursor`` past each event it has not passed yet; return their frames.

    An event at or before the cursor's offset in its partition was already delivered and
    is skipped. ``epoch`` is the events' source epoch (``"unknown"`` when not known).
    """
    frames: list[str] = []
    for event in events:
        if event.offset <= cursor.offsets.get((event.source, event.partition), -1):
            continue
        cursor.advance(event.source, event.partition, event.offset, epoch or "unknown")
        frames.append(f"id: {cursor}\n{event.body}")
    return frames
