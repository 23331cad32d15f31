"""The layer's two-round-trip ``group_send`` against channels-redis's own: each scenario runs
with both, on a real Redis, and is received by channels-redis's ``receive``; then the layer's
own take of a process channel's queued messages (one round trip for all of them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer as Upstream

from realtime.layer import RedisChannelLayer

pytestmark = pytest.mark.services

LAYERS = {"ours": RedisChannelLayer, "upstream": Upstream}


@contextlib.asynccontextmanager
async def made(cls: Any, **config: Any) -> AsyncIterator[Any]:
    """A layer of class ``cls`` on the test Redis, under a prefix of its own."""
    url = os.environ.get("REDIS_URL")
    if not url:
        raise pytest.UsageError("REDIS_URL is not set: run `make test` (it starts Redis)")
    layer = cls(hosts=[url], prefix=f"ts-layer-test-{uuid.uuid4().hex}", expiry=60, **config)
    yield layer
    connection = layer.connection(0)
    keys = [k async for k in connection.scan_iter(f"{layer.prefix}*")]
    if keys:
        await connection.delete(*keys)
    await layer.close_pools()


@pytest.fixture(params=list(LAYERS))
async def layer(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with made(LAYERS[request.param], capacity=3) as layer:
        yield layer


async def drain(layer: Any, channel: str) -> list[Any]:
    """What ``channel`` holds, through channels-redis's receive (which blocks when empty)."""
    got: list[Any] = []
    while True:
        try:
            got.append(await asyncio.wait_for(layer.receive(channel), 0.5))
        except TimeoutError:
            return got


async def test_every_member_gets_the_message_once(layer: Any) -> None:
    hub_a = await layer.new_channel(prefix="hub.")  # process-specific, like the hubs'
    hub_b = await layer.new_channel(prefix="hub.")
    plain = "plain.channel"
    for channel in (hub_a, hub_b, plain):
        await layer.group_add("ts.bus.0", channel)
    await layer.group_send("ts.bus.0", {"type": "bus.events", "events": [[1, ["x"]]]})
    for channel in (hub_a, hub_b, plain):
        assert [m["events"] for m in await drain(layer, channel)] == [[[1, ["x"]]]]


async def test_a_full_channel_drops_what_is_over_capacity(layer: Any) -> None:
    hub = await layer.new_channel(prefix="hub.")
    await layer.group_add("g", hub)
    for n in range(5):
        await layer.group_send("g", {"type": "t", "n": n})
    assert [m["n"] for m in await drain(layer, hub)] == [0, 1, 2]  # capacity 3


async def test_expired_members_and_messages_are_dropped_first(layer: Any) -> None:
    hub = await layer.new_channel(prefix="hub.")
    gone = await layer.new_channel(prefix="hub.")
    await layer.group_add("g", hub)
    connection = layer.connection(0)
    group_key = layer._group_key("g")
    # A member that joined long ago has expired (group_expiry): it gets nothing, and
    # leaves the group.
    await connection.zadd(group_key, {gone: 1})
    # Messages queued long ago have expired: they do not count against the capacity.
    channel_key = layer.prefix + layer.non_local_name(hub)
    stale = [layer.serialize({"type": "t", "n": -i, "__asgi_channel__": [hub]}) for i in (1, 2, 3)]
    await connection.zadd(channel_key, {m: 1 for m in stale})
    await layer.group_send("g", {"type": "t", "n": 7})
    assert [m["n"] for m in await drain(layer, hub)] == [7]
    assert await drain(layer, gone) == []
    members = await connection.zrange(group_key, 0, -1)
    assert [m.decode() for m in members] == [hub]
    assert await connection.zscore(group_key, hub) <= time.time()


@pytest.fixture
async def ours() -> AsyncIterator[Any]:
    async with made(RedisChannelLayer) as layer:
        yield layer


async def test_a_process_channel_takes_every_queued_message_in_one_round_trip(ours: Any) -> None:
    hub = await ours.new_channel(prefix="hub.")
    await ours.group_add("g", hub)
    for n in range(5):
        await ours.group_send("g", {"type": "t", "n": n})
    channel_key = ours.prefix + ours.non_local_name(hub)
    assert (await ours.receive(hub))["n"] == 0
    assert await ours.connection(0).zcard(channel_key) == 0  # the other four came along
    assert [m["n"] for m in await drain(ours, hub)] == [1, 2, 3, 4]
    # What was taken (and backed up) is not taken again.
    await ours.group_send("g", {"type": "t", "n": 5})
    assert [m["n"] for m in await drain(ours, hub)] == [5]


async def test_a_take_whose_reply_is_lost_loses_nothing(ours: Any) -> None:
    hub = await ours.new_channel(prefix="hub.")
    await ours.group_add("g", hub)
    for n in range(3):
        await ours.group_send("g", {"type": "t", "n": n})
    # Taken in one round trip; its backup is dropped by the next take.
    assert [m["n"] for m in await drain(ours, hub)] == [0, 1, 2]
    for n in range(3, 6):
        await ours.group_send("g", {"type": "t", "n": n})
    real = ours.connection

    class LostReply:
        """The take runs in Redis, then the receive is cancelled before its reply."""

        def __init__(self, connection: Any) -> None:
            self.connection = connection

        async def eval(self, *args: Any) -> Any:
            await self.connection.eval(*args)
            raise asyncio.CancelledError

    ours.connection = lambda index: LostReply(real(index))
    with pytest.raises(asyncio.CancelledError):
        await ours.receive(hub)
    ours.connection = real
    assert [m["n"] for m in await drain(ours, hub)] == [3, 4, 5]  # put back, once
