"""The Channels-layer contract between ``consume_events`` and the stream servers.

Users are spread over ``SHARDS`` groups (``ts.bus.<shard>``). A server process joins the
group of a shard while it has a stream of a user in it (see ``realtime.hub``), and keeps
only its own users' events. So a batch costs at most one layer message per shard, not one
per user (at 500 events of 500 users, group sends were a tenth of ingest's CPU), and one
per process, not per browser. A message carries each user's events in Kafka order, already
encoded as SSE frames, so no server re-serialises them per connection.

There is one shard. A ``group_send`` costs about a millisecond of the consumer's CPU and a
Redis round trip (realtime/layer.py) whatever the message's size, so 16 shards cost a
70-event batch 15 ms of CPU where one costs 1.5 ms (docs/benchmarks.md); and a process that
serves 16 users or more was in every shard's group anyway, so the shards saved the servers
nothing.

``SHARDS`` is part of the contract: every consumer and server of a deployment must agree on
it, so it is a constant, not a setting (docs/deployment.md says how to upgrade across a
change of it).
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


SHARDS = 1


def shard_of(user_id: int) -> int:
    return user_id % SHARDS


def shard_group(shard: int) -> str:
    return f"ts.bus.{shard}"


def user_group(user_id: int) -> str:
    """The group that carries ``user_id``'s events."""
    return shard_group(shard_of(user_id))


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


# A BusItem as sent: a plain tuple (cheaper to build than the named one, and msgpack
# keeps no names anyway).
WireItem = tuple[str, int, int, int, str, str]


class BusMessage(TypedDict):
    type: str
    # [user id, that user's items in Kafka order] pairs: msgpack maps need string keys.
    events: list[tuple[int, list[WireItem]]]


def to_item(event: TaskEvent, prev: int, epoch: str, body: str | None = None) -> WireItem:
    pos = event.position
    frame = event.sse_body() if body is None else body
    return (pos.source, pos.partition, pos.offset, prev, epoch, frame)


async def publish(
    layer: Any,
    events: Sequence[TaskEvent],
    prevs: Sequence[int],
    epoch: str,
    bodies: Sequence[str] | None = None,
) -> int:
    """Send ``events`` to their owners' shard groups; return the layer messages sent.

    ``bodies``: the events' SSE bodies when the caller has them already. One message per
    shard, each user's events in order; shards go concurrently.
    """
    frames = bodies if bodies is not None else [e.sse_body() for e in events]
    by_shard: dict[int, dict[int, list[WireItem]]] = defaultdict(dict)
    for event, prev, body in zip(events, prevs, frames, strict=True):
        users = by_shard[shard_of(event.user_id)]
        users.setdefault(event.user_id, []).append(to_item(event, prev, epoch, body))
    if not by_shard:
        return 0
    gate = asyncio.Semaphore(MAX_CONCURRENT_SENDS)

    async def send(shard: int, users: dict[int, list[WireItem]]) -> None:
        message: BusMessage = {"type": MESSAGE_TYPE, "events": list(users.items())}
        async with gate:
            await layer.group_send(shard_group(shard), message)

    await asyncio.gather(*(send(s, users) for s, users in by_shard.items()))
    return len(by_shard)
