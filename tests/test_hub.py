"""The hub's per-stream inbox (realtime.inbox.Subscriber): shared runs, bounded, and one idle
timer per stream that still ends every wait on time."""

from __future__ import annotations

import asyncio
import contextlib

from realtime import bus
from realtime.hub import Hub
from realtime.inbox import Subscriber
from realtime.runs import runs_of

EPOCH = "E1"


def message(user_id: int, offsets: list[int]) -> dict[str, object]:
    items = [("task.events", 0, n, n - 1, EPOCH, f"data: {n}\n\n") for n in offsets]
    return {"type": bus.MESSAGE_TYPE, "events": [(user_id, items)]}


async def test_every_stream_of_a_user_gets_the_same_runs() -> None:
    hub = Hub(layer=None)
    streams = [Subscriber(7, limit=10) for _ in range(3)]
    hub.by_user[7] = set(streams)
    hub.deliver(message(7, [1, 2, 3]))
    got = [await s.next_runs(1) for s in streams]
    assert [[i.offset for r in runs for i in r.items] for runs in got] == [[1, 2, 3]] * 3
    # One Run object for all three: its frames are encoded once, not once per stream.
    assert got[0][0] is got[1][0] is got[2][0]


async def test_the_bound_counts_items_not_runs() -> None:
    subscriber = Subscriber(7, limit=3)
    subscriber.offer(runs_of([bus.BusItem("t", 0, n, n - 1, EPOCH, "") for n in (1, 2)]), 2)
    assert subscriber.closed_reason is None
    subscriber.offer(runs_of([bus.BusItem("t", 0, n, n - 1, EPOCH, "") for n in (3, 4)]), 2)
    assert subscriber.closed_reason == "overflow"


async def cut_short(subscriber: Subscriber, wait: float, offset: int) -> None:
    """A wait of ``wait`` seconds that an item ends at once (the stream's timer stays set)."""
    waiting = asyncio.create_task(subscriber.next_runs(wait))
    await asyncio.sleep(0)
    subscriber.offer(runs_of([bus.BusItem("t", 0, offset, offset - 1, EPOCH, "")]), 1)
    assert [i.offset for r in await waiting for i in r.items] == [offset]


async def test_waits_cut_short_reuse_the_stream_s_one_timer() -> None:
    """A busy stream's waits end by items, not by time: no timer is made per wait (the
    per-delivery handle the profile showed), the first one stays set."""
    subscriber = Subscriber(7, limit=10)
    await cut_short(subscriber, 15, 1)
    first = subscriber._timer
    for offset in range(2, 6):
        await cut_short(subscriber, 15, offset)
    assert subscriber._timer is first is not None


async def test_a_shorter_wait_after_a_longer_one_still_ends_on_time() -> None:
    subscriber = Subscriber(7, limit=10)
    await cut_short(subscriber, 30, 1)
    # The stream's timer is still set for the 30 s wait: this one must not wait for it.
    async with asyncio.timeout(5):
        assert await subscriber.next_runs(0.01) == []


async def test_a_longer_wait_after_a_shorter_one_does_not_end_early() -> None:
    subscriber = Subscriber(7, limit=10)
    await cut_short(subscriber, 0.01, 1)
    # The timer of the short wait fires during this one, which has 30 s to go: it must
    # move on, not wake the stream (that would be a heartbeat too early).
    longer = asyncio.create_task(subscriber.next_runs(30))
    await asyncio.sleep(0.2)
    assert not longer.done()
    subscriber.offer(runs_of([bus.BusItem("t", 0, 2, 1, EPOCH, "")]), 1)
    assert [i.offset for r in await longer for i in r.items] == [2]


class QuietLayer:
    """A channel layer on which nothing arrives."""

    async def new_channel(self, prefix: str) -> str:
        return prefix + "x"

    async def group_add(self, group: str, channel: str) -> None:
        pass

    async def group_discard(self, group: str, channel: str) -> None:
        pass

    async def receive(self, channel: str) -> dict[str, object]:
        await asyncio.Event().wait()
        raise AssertionError


async def test_detaching_stops_the_stream_s_timer() -> None:
    hub = Hub(QuietLayer())
    subscriber = Subscriber(7, limit=10)
    await hub.attach(subscriber)
    await cut_short(subscriber, 30, 1)
    handle = subscriber._timer
    assert handle is not None
    await hub.detach(subscriber)
    assert handle.cancelled()
    await hub.stop()


async def test_the_inbox_list_is_the_stream_s_for_its_life() -> None:
    """``take`` hands out a copy and empties the stream's own list: what a stream keeps
    across a wait is not made anew per wake (the collector promotes what a wait holds)."""
    subscriber = Subscriber(7, limit=10)
    inbox = subscriber.runs
    for offset in (1, 2, 3):
        await cut_short(subscriber, 15, offset)
        assert subscriber.runs is inbox and inbox == []
    subscriber.offer(runs_of([bus.BusItem("t", 0, 4, 3, EPOCH, "")]), 1)
    assert subscriber.waiter(15) is None  # something queued: no wait
    taken = subscriber.take()
    assert [i.offset for r in taken for i in r.items] == [4]
    assert taken is not inbox and subscriber.runs is inbox and subscriber.queued == 0


async def test_a_wake_after_a_cancelled_wait_is_harmless_and_the_next_wait_works() -> None:
    subscriber = Subscriber(7, limit=10)
    waiting = asyncio.create_task(subscriber.next_runs(15))
    await asyncio.sleep(0)
    waiting.cancel()
    async with asyncio.timeout(5):
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    subscriber.wake()  # the cancelled wait's future is still there, done
    await cut_short(subscriber, 15, 1)


async def test_the_stream_s_loop_is_looked_up_once() -> None:
    subscriber = Subscriber(7, limit=10)
    assert subscriber.loop is None
    await cut_short(subscriber, 15, 1)
    assert subscriber.loop is asyncio.get_running_loop()


class GatedLayer(QuietLayer):
    """A quiet layer whose group joins wait for ``gate``; counts them."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.joins = 0

    async def group_add(self, group: str, channel: str) -> None:
        self.joins += 1
        await self.gate.wait()


async def test_opens_waiting_on_a_join_all_go_on_together_when_it_is_done() -> None:
    """A reconnect storm: the first open joins the group, the others arrive meanwhile.
    Once the join is done they are all registered within a few turns of the loop, not
    one per turn (they queued on the membership lock: #9, M5)."""
    layer = GatedLayer()
    hub = Hub(layer)
    subscribers = [Subscriber(7 + n, limit=10) for n in range(50)]
    attaching = [asyncio.create_task(hub.attach(s)) for s in subscribers]
    for _ in range(5):
        await asyncio.sleep(0)
    assert layer.joins == 1 and not any(t.done() for t in attaching)
    layer.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert all(t.done() for t in attaching)
    assert layer.joins == 1
    assert sum(len(s) for s in hub.by_user.values()) == 50
    await hub.stop()


async def test_an_open_after_the_group_was_left_joins_it_again() -> None:
    """The last stream's detach leaves the group; the next open joins again before it
    is registered, and one that gave up waiting does not stop the join for the others."""
    layer = GatedLayer()
    layer.gate.set()
    hub = Hub(layer)
    first = Subscriber(7, limit=10)
    await hub.attach(first)
    await hub.detach(first)
    assert hub.joined == set()
    layer.gate.clear()
    quitter = asyncio.create_task(hub.attach(Subscriber(8, limit=10)))
    stayer = asyncio.create_task(hub.attach(Subscriber(9, limit=10)))
    for _ in range(3):
        await asyncio.sleep(0)
    quitter.cancel()
    layer.gate.set()
    async with asyncio.timeout(5):
        await stayer
    assert quitter.cancelled()
    assert layer.joins == 2 and hub.joined == {0}
    assert set(hub.by_user) == {9}
    await hub.stop()


async def test_a_failed_join_fails_every_open_waiting_on_it() -> None:
    class Failing(GatedLayer):
        async def group_add(self, group: str, channel: str) -> None:
            self.joins += 1
            await self.gate.wait()
            raise ConnectionError("Redis is gone")

    layer = Failing()
    hub = Hub(layer)
    attaching = [asyncio.create_task(hub.attach(Subscriber(7 + n, limit=10))) for n in range(3)]
    await asyncio.sleep(0)
    layer.gate.set()
    results = await asyncio.gather(*attaching, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert hub.by_user == {} and hub.joined == set() and layer.joins == 1
    await hub.stop()
