"""The Channels-layer contract between ``consume_events`` and the stream servers.

One group per user (``ts.user.<id>``). Each server process joins a user's group once, for
all of that user's local streams (see ``realtime.hub``), so a send costs one layer message
per process, not per browser. A message carries a list of that user's events in Kafka order,
already encoded as SSE frames, so no server re-serialises them per connection.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple, TypedDict

from streaming.events import TaskEvent

MESSAGE_TYPE = "ts.events"
# redis-py 8 raises at once when its pool is exhausted instead of waiting, so the number of
# sends in flight is bounded here, well under the pool size set in settings.
MAX_CONCURRENT_SENDS = 64


def user_group(user_id: int) -> str:
    return f"ts.user.{user_id}"


class BusItem(NamedTuple):
    """One event on its way to streams. On the wire it is a plain array (msgpack keeps no
    names); the hub turns each back into a ``BusItem`` once per process (``from_wire``)."""

    source: str
    partition: int
    offset: int
    # The offset of the user's previous event in that partition (realtime.store), or
    # UNKNOWN_PREV: a stream that sent less than ``prev`` has a hole to fill first.
    prev: int
    epoch: str
    body: str  # the SSE frame without its `id:` line

    @classmethod
    def from_wire(cls, raw: Sequence[Any]) -> BusItem:
        source, partition, offset, prev, epoch, body = raw
        return cls(source, partition, offset, prev, epoch, body)


class BusMessage(TypedDict):
    type: str
    user: int
    events: list[BusItem]


def to_item(event: TaskEvent, prev: int, epoch: str) -> BusItem:
    pos = event.position
    return BusItem(pos.source, pos.partition, pos.offset, prev, epoch, event.sse_body())


async def publish(layer: Any, events: Sequence[TaskEvent], prevs: Sequence[int], epoch: str) -> int:
    """Send ``events`` to their owners' groups; return the number of layer messages sent.

    Events of one user go in one message, in order; different users go concurrently.
    """
    by_user: dict[int, list[BusItem]] = defaultdict(list)
    for event, prev in zip(events, prevs, strict=True):
        by_user[event.user_id].append(to_item(event, prev, epoch))
    if not by_user:
        return 0
    gate = asyncio.Semaphore(MAX_CONCURRENT_SENDS)

    async def send(user_id: int, items: list[BusItem]) -> None:
        message: BusMessage = {"type": MESSAGE_TYPE, "user": user_id, "events": items}
        async with gate:
            await layer.group_send(user_group(user_id), message)

    await asyncio.gather(*(send(u, items) for u, items in by_user.items()))
    return len(by_user)
