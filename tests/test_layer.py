"""The layer's two-round-trip ``group_send`` against channels-redis's own: each scenario runs
with both, on a real Redis, and is received by channels-redis's unchanged ``receive``."""

from __future__ import annotations

import asyncio
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


@pytest.fixture(params=list(LAYERS))
async def layer(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    url = os.environ.get("REDIS_URL")
    if not url:
        raise pytest.UsageError("REDIS_URL is not set: run `make test` (it starts Redis)")
    made = LAYERS[request.param](
        hosts=[url], prefix=f"ts-layer-test-{uuid.uuid4().hex}", capacity=3, expiry=60
    )
    yield made
    connection = made.connection(0)
    keys = [k async for k in connection.scan_iter(f"{made.prefix}*")]
    if keys:
        await connection.delete(*keys)
    await made.close_pools()


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
