"""What the hub hands to streams: runs of one user's consecutive events, encoded once.

A hub message carries each user's events in Kafka order; every stream of that user gets
the same items. Most of those streams are in the same state: their cursor names only the
user's partition, at the offset just before the message's first event. For such a stream
every frame's ``id:`` (the whole cursor after the event, realtime.frames) is just that
event's own position, so all of them can write the *same* bytes, encoded once per process
instead of once per stream (the fan-out's per-delivery cost, docs/benchmarks.md).

A run is a stretch of items that a stream either takes whole or checks item by item:
one source, partition and epoch, increasing offsets, and no item whose ``prev`` points past
the item before it (that would be a hole the stream must fill first). ``runs_of`` cuts a
user's items wherever one of those breaks, so within a run only the first item needs the
stream's checks (realtime.frames.takes_whole).
"""

from __future__ import annotations

from collections.abc import Sequence

from realtime.bus import BusItem
from realtime.store import UNKNOWN_PREV


class Run:
    """Consecutive items of one partition and epoch, in order, with no hole between them."""

    __slots__ = (
        "_data",
        "epoch",
        "first",
        "first_prev",
        "items",
        "key",
        "last",
        "partition",
        "source",
    )

    def __init__(self, items: list[BusItem]) -> None:
        head = items[0]
        self.items = items
        self.source = head.source
        self.partition = head.partition
        # The cursor's key for the run's partition, made once per process, not per stream.
        self.key = (head.source, head.partition)
        self.epoch = head.epoch
        self.first = head.offset
        self.first_prev = head.prev
        self.last = items[-1].offset
        self._data: bytes | None = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def data(self) -> bytes:
        """Every frame of the run, each with its own position as ``id:``; built on first
        use and then shared by every stream that takes the run whole."""
        if self._data is None:
            self._data = encode(self.items)
        return self._data


def encode(items: Sequence[BusItem]) -> bytes:
    """The items' frames, each with the item's own position as ``id:``."""
    return "".join(
        f"id: {i.source}:{i.partition}:{i.offset}@{i.epoch}\n{i.body}" for i in items
    ).encode()


def follows(before: BusItem, item: BusItem) -> bool:
    """``item`` may be written right after ``before`` with no check of its own: same
    partition and epoch, a later offset, and nothing of the user's between the two."""
    return (
        item.partition == before.partition
        and item.source == before.source
        and item.epoch == before.epoch
        and item.offset > before.offset
        and (item.prev == UNKNOWN_PREV or item.prev <= before.offset)
    )


def runs_of(items: Sequence[BusItem]) -> list[Run]:
    """Cut ``items`` (one user's, in order) into runs."""
    runs: list[Run] = []
    current: list[BusItem] = []
    for item in items:
        if current and not follows(current[-1], item):
            runs.append(Run(current))
            current = []
        current.append(item)
    if current:
        runs.append(Run(current))
    return runs
