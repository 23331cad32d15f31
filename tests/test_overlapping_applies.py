"""Two batches applied at once on PostgreSQL (realtime/applier.py, tasks/turns.py,
tasks/apply_turn.py): Kafka's order holds whatever the first of them meets. Fake Kafka
edge; real PostgreSQL, real loop.

Each test holds batch 1 just before its writes until batch 2 has decided its tasks: the two
transactions are then truly in flight together, and batch 2 must have taken the task as
batch 1 leaves it (batch 1 still holds its lock)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer
from django.contrib.auth.models import User
from django.db import OperationalError, connections

from realtime.ingest import EventConsumer
from realtime.store_memory import MemoryHotStore
from streaming.adapter import adapt
from streaming.events import TaskEvent
from tasks.apply import apply_events
from tasks.apply_turn import apply_in_turn
from tasks.models import AsyncTask, TaskEventLog, TaskStatus
from tasks.turns import Turn
from tests.fakes import FakeConsumer, FakeMessage, FakeProducer, event_value, record
from tests.test_consumer_loop import _drop_refusing_trigger, _install_refusing_trigger

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connections["default"].vendor != "postgresql", reason="applies overlap on PostgreSQL"
    ),
]

DEADLINE = 10.0


@pytest.fixture(autouse=True)
async def close_thread_connections() -> AsyncIterator[None]:
    yield
    await database_sync_to_async(connections.close_all)()


# How each batch's first attempt in its turn ended, by the batch's first offset.
Ends = dict[int, str]


def holding_the_first(
    ends: Ends,
    then: Callable[[], None] = lambda: None,
    meanwhile: Callable[[], None] = lambda: None,
) -> Callable[..., Any]:
    """``apply_in_turn``, where the first attempt waits before its writes until the second
    has decided its tasks (taken from the first), then does ``then`` (which may fail it);
    the second, once the first is over, does ``meanwhile`` before its own writes."""
    attempts = {0: 0, 5: 0}  # by each batch's first offset
    second_decided = threading.Event()

    def attempt(events: list[TaskEvent], epoch: str, turn: Turn) -> Any:
        batch = events[0].position.offset
        attempts[batch] += 1
        if attempts[batch] > 1:
            pass
        elif batch == 0:
            may_write = turn.may_write

            def hold() -> None:
                assert second_decided.wait(DEADLINE), "batch 2 never decided beside batch 1"
                then()
                may_write()

            turn.may_write = hold  # type: ignore[method-assign]
        else:
            decided, second_may_write = turn.decided, turn.may_write

            def tell(rows: Any, versions: Any) -> None:
                decided(rows, versions)
                second_decided.set()

            def after_the_first() -> None:
                second_may_write()
                meanwhile()

            turn.decided = tell  # type: ignore[method-assign]
            turn.may_write = after_the_first  # type: ignore[method-assign]
        try:
            applied = apply_in_turn(events, epoch, turn)
        except Exception as exc:
            ends.setdefault(batch, type(exc).__name__)
            raise
        ends.setdefault(batch, "applied")
        return applied

    return attempt


def progress(alice: User, task: AsyncTask, offsets: range, **data: Any) -> list[FakeMessage]:
    return [
        record(
            event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": n, **data}),
            offset=n,
        )
        for n in offsets
    ]


async def run_until(
    consumer: FakeConsumer, attempt: Callable[..., Any], commits: int
) -> MemoryHotStore:
    store = MemoryHotStore()
    loop = EventConsumer(
        consumer,
        FakeProducer(),
        InMemoryChannelLayer(),
        store,
        epoch="E1",
        dlq_topic="task.events.dlq",
        poll_timeout=0.05,
        batch_size=5,  # full batches: a backlog, where applies overlap
        attempt=attempt,
        overlap=True,
    )
    running = asyncio.create_task(loop.run())
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while len(consumer.commits) < commits:
        assert asyncio.get_running_loop().time() < deadline, f"commits: {consumer.commits}"
        assert not running.done(), running
        await asyncio.sleep(0.01)
    loop.request_stop()
    await asyncio.wait_for(running, DEADLINE)
    return store


# Offsets 0-4 in batch 1, 5-9 in batch 2: both committed, in order.
BOTH = [[("task.events", 0, 5)], [("task.events", 0, 10)]]


def log_of(task: AsyncTask) -> list[tuple[int, bool]]:
    rows = TaskEventLog.objects.filter(task=task).order_by("offset")
    return list(rows.values_list("offset", "changed_task"))


def outcome(task: AsyncTask) -> tuple[list[tuple[int, bool]], int | None]:
    """The task's log (offset, whether the event moved the task) and its last offset."""
    task.refresh_from_db()
    return log_of(task), task.last_event_offset


async def test_two_batches_of_one_task_apply_in_kafka_order_while_they_overlap(
    alice: User,
) -> None:
    task = await database_sync_to_async(AsyncTask.objects.create)(owner=alice, kind="demo")
    consumer = FakeConsumer()
    consumer.batches += [progress(alice, task, range(0, 5)), progress(alice, task, range(5, 10))]
    ends: Ends = {}
    store = await run_until(consumer, holding_the_first(ends), commits=2)
    assert ends == {0: "applied", 5: "applied"}
    assert consumer.commits == BOTH
    # Every event moved the task: batch 2 read it as batch 1 left it.
    assert await database_sync_to_async(outcome)(task) == ([(n, True) for n in range(10)], 9)
    page = await store.read_after(alice.pk, ("task.events", 0), -1, 20)
    assert [e.offset for e in page.events] == list(range(10))


async def test_a_batch_holding_a_logged_event_is_applied_again_before_the_next_one(
    alice: User,
) -> None:
    """Batch 1 holds an event applied before (a redelivery): its first attempt fails on the
    log's unique index while batch 2 waits for the task. Batch 2 rolls back, batch 1 is
    applied again with the log, then batch 2."""
    task = await database_sync_to_async(AsyncTask.objects.create)(owner=alice, kind="demo")
    first = progress(alice, task, range(0, 5))
    await database_sync_to_async(apply_events)([adapt(first[3])], "E1")
    consumer = FakeConsumer()
    consumer.batches += [first, progress(alice, task, range(5, 10))]
    ends: Ends = {}
    await run_until(consumer, holding_the_first(ends), commits=2)
    assert ends == {0: "IntegrityError", 5: "applied"}
    assert consumer.commits == BOTH
    # Offset 3 was logged first (it moved the task then); 0-2 are older than it now.
    logged = [(n, n >= 3) for n in range(10)]
    assert await database_sync_to_async(outcome)(task) == (logged, 9)


async def test_a_batch_the_database_refuses_part_of_is_bisected_before_the_next_one(
    alice: User,
) -> None:
    task = await database_sync_to_async(AsyncTask.objects.create)(owner=alice, kind="demo")
    consumer = FakeConsumer()
    bad = event_value(user_id=alice.pk, task_id=str(task.id), data={"progress": 2, "bad": True})
    first = [*progress(alice, task, range(0, 2)), record(bad, offset=2)]
    consumer.batches += [
        first + progress(alice, task, range(3, 5)),
        progress(alice, task, range(5, 10)),
    ]
    ends: Ends = {}
    await database_sync_to_async(_install_refusing_trigger)()
    try:
        await run_until(consumer, holding_the_first(ends), commits=2)
    finally:
        await database_sync_to_async(_drop_refusing_trigger)()
    assert ends == {0: "DataError", 5: "applied"}
    assert consumer.commits == BOTH
    logged = [(n, True) for n in range(10) if n != 2]
    assert await database_sync_to_async(outcome)(task) == (logged, 9)


async def test_after_an_outage_in_the_first_batch_the_next_one_is_not_applied_before_it(
    alice: User,
) -> None:
    task = await database_sync_to_async(AsyncTask.objects.create)(owner=alice, kind="demo")
    first, second = progress(alice, task, range(0, 5)), progress(alice, task, range(5, 10))
    consumer = FakeConsumer()
    # Both, nothing for the reads while they are in flight, then both again after the rewind.
    consumer.batches += [first, second, [], [], [], first, second]

    def outage() -> None:
        raise OperationalError("connection lost (the test's outage)")

    ends: Ends = {}
    await run_until(consumer, holding_the_first(ends, outage), commits=2)
    assert ends == {0: "OperationalError", 5: "BeforeFailed"}
    assert consumer.seeks == [("task.events", 0, 0)]
    assert consumer.commits == BOTH
    # Batch 2 was not committed ahead of batch 1: batch 1's events moved the task.
    assert await database_sync_to_async(log_of)(task) == [(n, True) for n in range(10)]


async def test_a_task_changed_by_someone_else_meanwhile_is_not_overwritten(alice: User) -> None:
    """Batch 2 took the task as batch 1 left it; before batch 2 writes, an operator cancels
    the task. Batch 2 sees the task's version moved, and is applied again alone: its events
    then come after a final state, and change nothing."""
    task = await database_sync_to_async(AsyncTask.objects.create)(owner=alice, kind="demo")
    consumer = FakeConsumer()
    consumer.batches += [progress(alice, task, range(0, 5)), progress(alice, task, range(5, 10))]

    def cancel() -> None:
        # Another connection, as the admin's would be.
        thread = threading.Thread(target=_cancel, args=(task.pk,))
        thread.start()
        thread.join(DEADLINE)

    ends: Ends = {}
    await run_until(consumer, holding_the_first(ends, meanwhile=cancel), commits=2)
    assert ends == {0: "applied", 5: "Stale"}
    assert consumer.commits == BOTH
    logged = [(n, n < 5) for n in range(10)]
    assert await database_sync_to_async(outcome)(task) == (logged, 4)
    task = await database_sync_to_async(AsyncTask.objects.get)(id=task.id)
    assert task.status == TaskStatus.CANCELLED


def _cancel(task_id: Any) -> None:
    try:
        AsyncTask.objects.filter(id=task_id).update(status=TaskStatus.CANCELLED)
    finally:
        connections.close_all()


async def test_only_a_full_batch_takes_a_turn_and_after_a_small_one_it_waits_for_it(
    alice: User,
) -> None:
    """A paced flow's batch (3 of 5 records) is applied alone; the full one after it takes a
    turn, once the small one is applied."""
    task = await database_sync_to_async(AsyncTask.objects.create)(owner=alice, kind="demo")
    consumer = FakeConsumer()
    consumer.batches += [progress(alice, task, range(0, 3)), progress(alice, task, range(3, 8))]
    in_turn: list[int] = []

    def attempt(events: list[TaskEvent], epoch: str, turn: Turn) -> Any:
        in_turn.append(events[0].position.offset)
        return apply_in_turn(events, epoch, turn)

    await run_until(consumer, attempt, commits=2)
    assert in_turn == [3]
    assert consumer.commits == [[("task.events", 0, 3)], [("task.events", 0, 8)]]
    assert await database_sync_to_async(outcome)(task) == ([(n, True) for n in range(8)], 7)


def test_a_third_batch_never_locks_what_the_second_took_from_the_first(alice: User) -> None:
    """Batch 2 takes the task from batch 1, and locks it only at its writes, once batch 1
    has committed. Batch 3 reads in between (the task is free then): it must take the task
    from batch 2, not lock it, or batch 2 waits for its lock while it waits for batch 2's
    commit, a cycle PostgreSQL cannot see (with a lock timeout here, not for ever)."""
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    batches = [
        [adapt(m) for m in progress(alice, task, range(start, start + 5))] for start in (0, 5, 10)
    ]
    first = Turn(None)
    second = Turn(first)
    third = Turn(second)
    second_decided, third_read = threading.Event(), threading.Event()
    first_may_write, second_may_write = first.may_write, second.may_write
    second_decides, third_locks = second.decided, third.locked

    def first_holds() -> None:
        assert second_decided.wait(DEADLINE), "batch 2 never decided beside batch 1"
        first_may_write()

    def second_tells(rows: Any, versions: Any) -> None:
        second_decides(rows, versions)
        second_decided.set()

    def second_holds() -> None:
        second_may_write()  # batch 1 committed: the task is free until batch 2 locks it
        assert third_read.wait(DEADLINE), "batch 3 never read beside batch 2"

    def third_tells(tasks: frozenset[str]) -> None:
        third_locks(tasks)
        third_read.set()

    first.may_write = first_holds  # type: ignore[method-assign]
    second.decided = second_tells  # type: ignore[method-assign]
    second.may_write = second_holds  # type: ignore[method-assign]
    third.locked = third_tells  # type: ignore[method-assign]
    ends: dict[int, str] = {}

    def apply(n: int, turn: Turn) -> None:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SET lock_timeout = '3s'")
            apply_in_turn(batches[n], "E1", turn)
            ends[n] = "applied"
            turn.end(committed=True)
        except Exception as exc:
            ends[n] = type(exc).__name__
            turn.end(committed=False)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=apply, args=(n, t)) for n, t in enumerate([first, second])]
    for thread in threads:
        thread.start()
    threads[0].join(DEADLINE)  # batch 1 committed; batch 2 holds before its writes
    assert ends == {0: "applied"}
    threads.append(threading.Thread(target=apply, args=(2, third)))
    threads[2].start()
    for thread in threads[1:]:
        thread.join(DEADLINE)
    assert ends == {0: "applied", 1: "applied", 2: "applied"}
    # Every event moved the task, in Kafka's order.
    assert outcome(task) == ([(n, True) for n in range(15)], 14)
