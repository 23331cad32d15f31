"""What ``manage.py replay_events`` selects: the options, their checks, and the Kafka
offset ranges they name.

- ``from_cursor``: everything after a stream cursor (planned like a stream opened with
  that ``Last-Event-ID``, see ``realtime.replay.events``);
- ``partition`` with ``start_offset``/``end_offset``: an inclusive offset range;
- ``since``/``until``: a time range of record timestamps, mapped to offsets with
  ``offsets_for_times`` (since: the first offset at or after it; until: exclusive);
- nothing: every partition from its earliest retained offset;
narrowed by ``user_id`` (the record key) and ``task_id``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model

from streaming.cursor import Cursor, PartitionKey
from streaming.kafka import RangeError, RangeReader


class ReplayError(Exception):
    """A selection that cannot be replayed; the message says why."""


@dataclass(frozen=True)
class Selection:
    user_id: int | None = None
    task_id: str | None = None
    from_cursor: str | None = None
    partition: int | None = None
    start_offset: int | None = None
    end_offset: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    source: str | None = None


@dataclass(frozen=True)
class OffsetRange:
    source: str
    partition: int
    first: int
    last: int  # inclusive

    @property
    def key(self) -> PartitionKey:
        return (self.source, self.partition)

    def __str__(self) -> str:
        return f"{self.source}:{self.partition} offsets {self.first}..{self.last}"


def check(s: Selection, source: str) -> None:
    """Refuse a selection that cannot be replayed, with the reason (``ReplayError``)."""
    if s.source is not None and s.source != source:
        raise ReplayError(
            f"source {s.source!r} is not allowed: replay_events reads only {source!r} "
            "(TASKSTREAM_TOPIC_EVENTS), the one source streams deliver"
        )
    if s.user_id is not None and not get_user_model().objects.filter(pk=s.user_id).exists():
        raise ReplayError(f"unknown user {s.user_id}")
    if s.task_id is not None:
        try:
            uuid.UUID(s.task_id)
        except ValueError:
            raise ReplayError(f"--task is not a UUID: {s.task_id!r}") from None
    offsets = s.start_offset is not None or s.end_offset is not None
    times = s.since is not None or s.until is not None
    if offsets and s.partition is None:
        raise ReplayError("--start-offset and --end-offset need --partition")
    if offsets and times:
        raise ReplayError("choose offsets (--start-offset/--end-offset) or times, not both")
    if s.from_cursor is not None:
        if s.user_id is None:
            raise ReplayError("--from needs --user: a cursor is one user's stream position")
        if offsets or times or s.partition is not None:
            raise ReplayError("--from cannot be combined with --partition, offsets or times")
    for name, value in (("--start-offset", s.start_offset), ("--end-offset", s.end_offset)):
        if value is not None and value < 0:
            raise ReplayError(f"{name} must be 0 or more")
    if s.partition is not None and s.partition < 0:
        raise ReplayError("--partition must be 0 or more")
    if s.start_offset is not None and s.end_offset is not None and s.start_offset > s.end_offset:
        raise ReplayError(
            f"empty range: --start-offset {s.start_offset} is after --end-offset {s.end_offset}"
        )
    for name, when in (("--since", s.since), ("--until", s.until)):
        if when is not None and when.tzinfo is None:
            raise ReplayError(f"{name} needs a time zone, e.g. 2026-01-02T03:04:05Z")
    if s.since is not None and s.until is not None and s.since >= s.until:
        raise ReplayError("empty range: --since is not before --until")


def ranges_after(reader: RangeReader, cursor: Cursor) -> list[OffsetRange]:
    """Everything after ``cursor``, in the order the stream replays its partitions."""
    ranges: list[OffsetRange] = []
    for (source, partition), offset in cursor.offsets.items():
        low, high = reader.watermarks(source, partition)
        if offset + 1 < low:
            raise ReplayError(
                f"--from is expired: {source}:{partition} now starts at offset {low} "
                f"(retention deleted {offset + 1}..{low - 1})"
            )
        ranges.append(OffsetRange(source, partition, offset + 1, high - 1))
    return [r for r in ranges if r.first <= r.last]


def explicit_ranges(reader: RangeReader, s: Selection, source: str) -> list[OffsetRange]:
    """The ranges named by partition, offsets or times (or every retained record)."""
    try:
        partitions = reader.partitions(source)
    except RangeError as exc:
        raise ReplayError(str(exc)) from None
    if s.partition is not None:
        if s.partition not in partitions:
            raise ReplayError(
                f"partition {s.partition} does not exist ({source} has "
                f"{partitions[0]}..{partitions[-1]})"
            )
        partitions = [s.partition]
    bounds = {p: reader.watermarks(source, p) for p in partitions}
    firsts = {p: low for p, (low, _) in bounds.items()}
    lasts = {p: high - 1 for p, (_, high) in bounds.items()}
    if s.since is not None:
        firsts = first_offsets_at(reader, source, partitions, s.since)
    if s.until is not None:
        for p, offset in first_offsets_at(reader, source, partitions, s.until).items():
            if offset >= 0:
                lasts[p] = offset - 1
    if s.start_offset is not None or s.end_offset is not None:
        assert s.partition is not None
        low, high = bounds[s.partition]
        first = low if s.start_offset is None else s.start_offset
        last = high - 1 if s.end_offset is None else s.end_offset
        if first >= high or last < low:
            raise ReplayError(
                f"empty range: {source}:{s.partition} holds offsets {low}..{high - 1}"
                if high > low
                else f"empty range: {source}:{s.partition} holds no records"
            )
        firsts[s.partition], lasts[s.partition] = max(first, low), min(last, high - 1)
    ranges = [
        OffsetRange(source, p, firsts[p], lasts[p])
        for p in partitions
        if firsts.get(p, -1) >= 0 and firsts[p] <= lasts[p]
    ]
    if not ranges:
        what = "at or after --since" if s.since is not None else "in the selected range"
        raise ReplayError(f"empty range: {source} has no records {what}")
    return ranges


def first_offsets_at(
    reader: RangeReader, source: str, partitions: list[int], when: datetime
) -> dict[int, int]:
    """The time → offset mapping (also of a stream's ``?since=``): per partition, the first
    offset whose record timestamp is at or after ``when`` (Kafka's offsets-for-times), -1
    where there is none yet. Kafka's timestamps are milliseconds, so ``when`` is rounded up
    to one: a record at 12.000 s is before 12.0004 s."""
    return reader.offsets_for_time(source, partitions, _millis(when))


def _millis(when: datetime) -> int:
    """Milliseconds since the Unix epoch, rounded up, in integers (a float loses the last
    digit), never below 0 (Kafka reads negative times as "latest" or "earliest")."""
    micros = (when - _EPOCH) // timedelta(microseconds=1)
    return max(-(-micros // 1000), 0)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
