"""A server process is in the bus group only while it lives (realtime/hub.py): it leaves at
shutdown, a live one keeps its membership past the group expiry, and one whose layer
receive failed (a Redis restart loses the groups) joins again with its next stream.

Otherwise a stopped process stays a member until its membership lapses, and every
``consume_events`` batch is copied into its channel until then (the bench once found 19
such members and Redis at 2.1 GB)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from realtime import bus
from realtime.hub import Hub
from realtime.inbox import Subscriber
from realtime.layer import RedisChannelLayer
from realtime.redis_retry import SOCKET_TIMEOUT
from tests.nodes import open_stream, start_node
from tests.sse import wait_until

pytestmark = pytest.mark.services

GROUP = bus.shard_group(0)


def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        raise pytest.UsageError("REDIS_URL is not set: run `make test` (it starts Redis)")
    return url


async def make_layer(group_expiry: int) -> RedisChannelLayer:
    return RedisChannelLayer(
        # The socket outlives the receive's 5 s blocking pop, as in settings.
        hosts=[{"address": redis_url(), "socket_timeout": SOCKET_TIMEOUT}],
        prefix=f"ts-membership-test-{uuid.uuid4().hex}",
        expiry=60,
        group_expiry=group_expiry,
    )


@pytest.fixture
async def layer() -> AsyncIterator[RedisChannelLayer]:
    made = await make_layer(group_expiry=120)
    yield made
    await forget(made)


async def forget(layer: RedisChannelLayer) -> None:
    connection = layer.connection(0)
    keys = [k async for k in connection.scan_iter(f"{layer.prefix}*")]
    if keys:
        await connection.delete(*keys)
    await layer.close_pools()


async def members(layer: RedisChannelLayer) -> list[str]:
    raw = await layer.connection(0).zrange(layer._group_key(GROUP), 0, -1)
    return sorted(name.decode() for name in raw)


def one_event(user_id: int, offset: int) -> dict[str, Any]:
    item = ("task.events", 0, offset, offset - 1, "E1", f"data: {offset}\n\n")
    return {"type": bus.MESSAGE_TYPE, "events": [(user_id, [item])]}


async def test_a_stopped_hub_leaves_the_group_and_gets_no_more_copies(
    layer: RedisChannelLayer,
) -> None:
    hub = Hub(layer)
    await hub.attach(Subscriber(7, limit=10))
    assert hub.channel is not None
    assert await members(layer) == [hub.channel]
    await hub.stop()
    assert await members(layer) == []
    await layer.group_send(GROUP, one_event(7, 1))
    # Nothing was queued for the stopped process's channel.
    assert await layer.connection(0).zcard(layer.prefix + layer.non_local_name(hub.channel)) == 0


async def test_a_live_hub_stays_a_member_past_the_group_expiry() -> None:
    layer = await make_layer(group_expiry=2)  # re-joined every 0.5 s
    hub = Hub(layer)
    try:
        subscriber = Subscriber(7, limit=10)
        await hub.attach(subscriber)
        # Time itself is what is tested: three expiries pass, then a batch is sent.
        await asyncio.sleep(6)
        await layer.group_send(GROUP, one_event(7, 1))
        async with asyncio.timeout(10):
            items = await subscriber.next_items(10)
        assert [item.offset for item in items] == [1]
    finally:
        await hub.stop()
        await forget(layer)


async def test_after_a_failed_receive_the_hub_joins_its_groups_again() -> None:
    """A restarted Redis has lost the groups: the hub must not rely on having joined."""
    added: list[str] = []
    failed, rejoined = asyncio.Event(), asyncio.Event()

    class Layer:
        group_expiry = 120
        receives = 0

        async def new_channel(self, prefix: str) -> str:
            return prefix + "x"

        async def group_add(self, group: str, channel: str) -> None:
            added.append(group)
            if len(added) == 2:
                rejoined.set()

        async def group_discard(self, group: str, channel: str) -> None:
            pass

        async def receive(self, channel: str) -> dict[str, object]:
            self.receives += 1
            if self.receives == 1:
                failed.set()
                raise ConnectionError("Redis restarted")
            await asyncio.Event().wait()
            raise AssertionError

    hub = Hub(Layer())
    await hub.attach(Subscriber(7, limit=10))
    async with asyncio.timeout(10):
        await failed.wait()
        await rejoined.wait()
    assert added == [GROUP, GROUP]
    await hub.stop()


def test_a_drained_server_leaves_the_bus_group(tmp_path: Path) -> None:
    """`manage.py serve`, SIGTERM: the streams end over the drain, then the process leaves
    its group before it exits."""
    prefix = f"ts-test-membership-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        REDIS_URL=redis_url(),
        TASKSTREAM_REDIS_PREFIX=prefix,
        TASKSTREAM_SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        TASKSTREAM_DRAIN_SECONDS="0.5",
        DJANGO_SECRET_KEY="test-only-secret-key-not-for-production-0123456789",
        PYTHONUNBUFFERED="1",
    )
    client = redis.Redis.from_url(redis_url())
    group_key = f"{prefix}:asgi:group:{GROUP}"
    proc, base = start_node(env, tmp_path)
    try:
        reader = open_stream(base, 41)
        reader.wait_for(lambda r: any(e.event == "stream-open" for e in r.events), 20)
        assert client.zcard(group_key) == 1
        assert proc.popen is not None
        proc.popen.send_signal(signal.SIGTERM)
        wait_until(lambda: proc.popen is not None and proc.popen.poll() is not None, 20, "exit")
        reader.close()
        assert proc.popen.returncode == 0, proc.log()[-2000:]
        assert client.zcard(group_key) == 0, proc.log()[-2000:]
    finally:
        proc.stop()
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()
