"""Runs (realtime.runs) and the cursor's shortcut over them (realtime.frames.takes_whole):
a run taken whole must write exactly what writing it item by item would, byte for byte,
and leave the cursor in the same state."""

from __future__ import annotations

import random

from realtime.bus import BusItem
from realtime.frames import next_frame, takes_whole
from realtime.runs import Run, runs_of
from realtime.store import UNKNOWN_PREV
from streaming.cursor import Cursor

SOURCE = "task.events"


def item(offset: int, prev: int, partition: int = 0, epoch: str = "E1") -> BusItem:
    return BusItem(SOURCE, partition, offset, prev, epoch, f"event: x\ndata: {offset}\n\n")


def offsets(runs: list[Run]) -> list[list[int]]:
    return [[i.offset for i in run.items] for run in runs]


def test_a_run_is_cut_where_partition_epoch_order_or_contiguity_breaks() -> None:
    items = [
        item(1, -1),
        item(2, 1),
        item(4, UNKNOWN_PREV),  # a redelivered record: nothing to check
        item(6, 5),  # 5 is missing: the stream must fill it first
        item(7, 6),
        item(3, 2, partition=1),
        item(4, 3, partition=1, epoch="E2"),
        item(4, 3, partition=1, epoch="E2"),  # not past the one before
    ]
    assert offsets(runs_of(items)) == [[1, 2, 4], [6, 7], [3], [4], [4]]
    assert runs_of([]) == []


def test_the_shared_frames_name_each_event_s_own_position() -> None:
    (run,) = runs_of([item(5, 4), item(6, 5)])
    frames = [f"id: {SOURCE}:0:{n}@E1\nevent: x\ndata: {n}\n\n" for n in (5, 6)]
    assert run.data == "".join(frames).encode()
    assert run.data is run.data  # encoded once


def test_takes_whole_only_a_run_the_cursor_would_write_unchanged() -> None:
    (run,) = runs_of([item(5, 4), item(6, 5)])
    assert not takes_whole(Cursor(), run)  # nothing sent yet: the ?since= floor may apply
    two = Cursor.at(SOURCE, 0, 4, "E1")
    two.advance(SOURCE, 1, 9, "E1")
    assert not takes_whole(two, run)  # each id must name partition 1 too
    assert not takes_whole(Cursor.at(SOURCE, 0, 4, "E0"), run)  # another epoch
    assert not takes_whole(Cursor.at(SOURCE, 0, 5, "E1"), run)  # 5 was sent: a duplicate
    assert not takes_whole(Cursor.at(SOURCE, 0, 3, "E1"), run)  # 4 is missing: a hole
    assert not takes_whole(Cursor.at(SOURCE, 1, 4, "E1"), run)  # another partition
    cursor = Cursor.at(SOURCE, 0, 4, "E1")
    assert takes_whole(cursor, run)
    assert str(cursor) == f"{SOURCE}:0:6@E1"


def item_by_item(cursor: Cursor, run: Run) -> bytes | None:
    """The reference: the stream's per-item rule, or None where it would fill a hole or
    change epoch (takes_whole must refuse those)."""
    frames: list[str] = []
    for i in run.items:
        if cursor.epochs.get(i.source) not in (None, i.epoch):
            return None
        sent = cursor.offsets.get((i.source, i.partition), -1)
        if i.offset <= sent:
            continue
        if i.prev != UNKNOWN_PREV and i.prev > sent:
            return None
        frames.append(next_frame(cursor, i))
    return "".join(frames).encode()


def test_a_run_taken_whole_is_byte_for_byte_what_the_per_item_rule_writes() -> None:
    rng = random.Random(9)
    taken = 0
    for _ in range(3000):
        partition = rng.choice([0, 0, 0, 1])
        epoch = rng.choice(["E1", "E1", "E1", "E2"])
        items, offset = [], rng.randrange(0, 8)
        for _ in range(rng.randrange(1, 6)):
            prev = rng.choice([offset - 1, offset - 2, UNKNOWN_PREV, offset + 1])
            items.append(item(offset, prev, partition, epoch))
            offset += rng.choice([1, 1, 2, 0, -1])
        cursor = Cursor.at(SOURCE, 0, rng.randrange(-1, 8), "E1")
        if rng.random() < 0.2:
            cursor.advance(SOURCE, 1, rng.randrange(0, 8), "E1")
        for run in runs_of(items):
            reference, fast = cursor.copy(), cursor.copy()
            expected = item_by_item(reference, run)
            if takes_whole(fast, run):
                taken += 1
                assert run.data == expected
                assert fast == reference
            else:
                assert fast == cursor  # untouched: the stream goes item by item
            if expected is None:
                break
            cursor = reference
    assert taken > 200  # the common case was exercised
