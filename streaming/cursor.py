"""Resume cursors: what an SSE `id:` says and what `Last-Event-ID` is parsed back into.

A cursor names, for each Kafka partition the stream has delivered from, the offset of the
last record delivered, and the epoch (the topic's identity) that offset belongs to:

    task.events:2:1042@4fzvDqAp            one partition (the normal case: records are
                                            keyed by user, so a user's events share one)
    task.events:0:17@4fzvDqAp,task.events:2:1042@4fzvDqAp     several partitions

Offsets only mean something inside one incarnation of a topic; the epoch makes a cursor
from a deleted and re-created topic detectable instead of silently mis-resumed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

MAX_CURSOR_LENGTH = 1024
# The epoch written where the topic's identity is not known (a task whose last event was
# applied before epochs were recorded). Never equal to a real topic id, so a resume from
# such a cursor gets an explicit ``epoch-changed`` reset rather than a guess.
UNKNOWN_EPOCH: Final = "unknown"
_ENTRY = re.compile(r"^([A-Za-z0-9._-]{1,249}):(\d{1,9}):(\d{1,19})@([A-Za-z0-9_-]{1,64})$")

PartitionKey = tuple[str, int]


class CursorError(ValueError):
    """The text is not a cursor this server ever produced."""


@dataclass
class Cursor:
    offsets: dict[PartitionKey, int] = field(default_factory=dict)
    epochs: dict[str, str] = field(default_factory=dict)

    def advance(self, source: str, partition: int, offset: int, epoch: str) -> None:
        self.offsets[(source, partition)] = offset
        self.epochs[source] = epoch

    def __str__(self) -> str:
        if len(self.offsets) == 1:  # the normal case, once per delivered event
            ((source, partition), offset) = next(iter(self.offsets.items()))
            return f"{source}:{partition}:{offset}@{self.epochs[source]}"
        return ",".join(
            f"{source}:{partition}:{offset}@{self.epochs[source]}"
            for (source, partition), offset in sorted(self.offsets.items())
        )

    @classmethod
    def at(cls, source: str, partition: int, offset: int, epoch: str) -> Cursor:
        """The cursor just after one position."""
        cursor = cls()
        cursor.advance(source, partition, offset, epoch or UNKNOWN_EPOCH)
        return cursor

    def copy(self) -> Cursor:
        return Cursor(dict(self.offsets), dict(self.epochs))


def parse(text: str) -> Cursor:
    if len(text) > MAX_CURSOR_LENGTH:
        raise CursorError("cursor is too long")
    cursor = Cursor()
    for entry in text.split(","):
        match = _ENTRY.match(entry.strip())
        if match is None:
            raise CursorError(f"not a cursor entry: {entry[:80]!r}")
        source, partition, offset, epoch = match.groups()
        if cursor.epochs.get(source, epoch) != epoch:
            raise CursorError(f"two epochs for source {source!r}")
        if (source, int(partition)) in cursor.offsets:
            raise CursorError(f"partition {source}:{partition} named twice")
        cursor.advance(source, int(partition), int(offset), epoch)
    return cursor
