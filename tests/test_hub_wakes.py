"""Deferred wakes (realtime.wakes): a stream offered items is woken a few milliseconds
later, with whatever else the hub received meanwhile, and never by a stale wake."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from realtime import bus, wakes
from realtime.hub import Hub
from realtime.inbox import Subscriber
from realtime.runs import Run, runs_of
from tests.test_hub import QuietLayer

EPOCH = "E1"


def message(user_id: int, offsets: list[int]) -> dict[str, object]:
    items = [("task.events", 0, n, n - 1, EPOCH, f"data: {n}\n\n") for n in offsets]
    return {"type": bus.MESSAGE_TYPE, "events": [(user_id, items)]}


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> Iterator[asyncio.Queue[int]]:
    """Each flush of the deferred wakes, as the number of streams it had due."""
    done: asyncio.Queue[int] = asyncio.Queue()
    real = wakes.Wakes._flush

    def flush(self: wakes.Wakes) -> None:
        count = len(self._due)
        real(self)
        done.put_nowait(count)

    monkeypatch.setattr(wakes.Wakes, "_flush", flush)
    yield done


async def waiting(subscribers: list[Subscriber], wait: float = 30) -> list[asyncio.Task[list[Run]]]:
    tasks = [asyncio.create_task(s.next_runs(wait)) for s in subscribers]
    await asyncio.sleep(0)  # each is in its wait
    assert all(s._waiter is not None and not s._waiter.done() for s in subscribers)
    return tasks


async def test_messages_received_within_the_linger_go_out_in_one_wake(
    flushes: asyncio.Queue[int],
) -> None:
    hub = Hub(layer=None)
    streams = [Subscriber(7, limit=10) for _ in range(3)]
    hub.by_user[7] = set(streams)
    tasks = await waiting(streams)
    hub.deliver(message(7, [1]))
    await asyncio.sleep(0)  # a wake at the offer would have ended the waits by now
    assert not any(t.done() for t in tasks)
    hub.deliver(message(7, [2, 3]))  # before the flush: the same wake
    async with asyncio.timeout(5):
        assert await flushes.get() == 3  # one flush, each stream due once
        got = [await t for t in tasks]
    assert [[i.offset for r in runs for i in r.items] for runs in got] == [[1, 2, 3]] * 3


async def test_a_stream_woken_otherwise_is_not_woken_again_by_the_flush(
    flushes: asyncio.Queue[int],
) -> None:
    subscriber = Subscriber(7, limit=10)
    [first] = await waiting([subscriber])
    subscriber.offer(runs_of([bus.BusItem("t", 0, 1, 0, EPOCH, "")]), 1)
    subscriber.wake()  # as its timer or a close would, before the flush
    async with asyncio.timeout(5):
        assert [i.offset for r in await first for i in r.items] == [1]
    [second] = await waiting([subscriber])
    async with asyncio.timeout(5):
        assert await flushes.get() == 1  # the offer's deferred wake ran ...
    await asyncio.sleep(0)
    assert not second.done()  # ... and did not end this wait with nothing
    second.cancel()


async def test_a_close_wakes_at_once() -> None:
    subscriber = Subscriber(7, limit=10)
    [task] = await waiting([subscriber])
    subscriber.close("drain")
    await asyncio.sleep(0)
    assert task.done() and subscriber.closed_reason == "drain"


async def test_an_offer_while_the_stream_writes_is_taken_without_a_wait() -> None:
    subscriber = Subscriber(7, limit=10)
    subscriber.offer(runs_of([bus.BusItem("t", 0, 1, 0, EPOCH, "")]), 1)
    assert subscriber.waiter(30) is None  # queued: the writer takes it at once


def test_the_wakes_of_a_loop_do_not_keep_it_alive() -> None:
    loop = asyncio.new_event_loop()
    wakes.wakes_of(loop)
    ref = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert ref() is None


async def test_a_backlog_handed_out_at_once_reaches_a_smaller_inbox_whole() -> None:
    """The layer hands a backlog's messages to the hub back to back, with no round trip
    between them (realtime.layer): the hub lets the loop run after each, and a half-full
    inbox wakes its stream at once, so a stream takes a backlog larger than its bound
    without being closed for overflow."""
    gate = asyncio.Event()
    backlog = [message(7, [2 * n + 1, 2 * n + 2]) for n in range(5)]  # 10 items

    class Layer(QuietLayer):
        async def receive(self, channel: str) -> dict[str, object]:
            if not gate.is_set():
                await gate.wait()
            if backlog:
                return backlog.pop(0)  # no suspension, like a buffered message
            return await super().receive(channel)

    hub = Hub(Layer())
    subscriber = Subscriber(7, limit=4)
    await hub.attach(subscriber)
    got: list[int] = []

    async def writer() -> None:
        while len(got) < 10 and subscriber.closed_reason is None:
            waiter = subscriber.waiter(30)
            if waiter is not None:
                await waiter
            got.extend(item.offset for run in subscriber.take() for item in run.items)

    task = asyncio.create_task(writer())
    await asyncio.sleep(0)  # in its wait
    gate.set()
    async with asyncio.timeout(5):
        await task
    assert subscriber.closed_reason is None
    assert got == list(range(1, 11))
    await hub.stop()
