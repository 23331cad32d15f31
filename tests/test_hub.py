"""The hub's per-stream inbox (realtime.hub.Subscriber): shared runs, bounded."""

from __future__ import annotations

from realtime import bus
from realtime.hub import Hub, Subscriber
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
