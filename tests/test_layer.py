"""The layer's ``group_send`` against channels-redis's own: each scenario runs with both, on a
real Redis, and is received by channels-redis's ``receive``; then what is the layer's own: a send
in one round trip while the group's members stay the same (and what happens when they change),
and the take of a process channel's queued messages (one round trip for all of them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer as Upstream

from realtime import layer as layer_module
from realtime import redis_scripts
from realtime.layer import RedisChannelLayer

pytestmark = pytest.mark.services

LAYERS = {"ours": RedisChannelLayer, "upstream": Upstream}


def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        raise pytest.UsageError("REDIS_URL is not set: run `make test` (it starts Redis)")
    return url


@contextlib.asynccontextmanager
async def made(cls: Any, prefix: str = "", **config: Any) -> AsyncIterator[Any]:
    """A layer of class ``cls`` on the test Redis, under a prefix of its own (or ``prefix``)."""
    config.setdefault("hosts", [redis_url()])
    prefix = prefix or f"ts-layer-test-{uuid.uuid4().hex}"
    layer = cls(prefix=prefix, expiry=60, **config)
    try:
        yield layer
    finally:  # a failed test's keys too (group keys have no expiry)
        for index in range(layer.ring_size):
            connection = layer.connection(index)
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


def counted(layer: Any, index: int = 0) -> list[str]:
    """The commands ``layer`` sends on connection ``index`` from now on, by name."""
    connection = layer.connection(index)
    sent: list[str] = []
    real = connection.execute_command

    async def execute_command(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await real(*args, **options)

    connection.execute_command = execute_command
    return sent


async def test_a_send_to_the_same_members_is_one_round_trip(ours: Any) -> None:
    hub = await ours.new_channel(prefix="hub.")
    await ours.group_add("g", hub)
    await ours.group_send("g", {"type": "t", "n": 0})  # learns the members
    sent = counted(ours)
    for n in (1, 2):
        await ours.group_send("g", {"type": "t", "n": n})
    assert sent == ["EVALSHA", "EVALSHA"]
    assert [m["n"] for m in await drain(ours, hub)] == [0, 1, 2]


async def test_a_first_send_to_an_empty_group_is_one_round_trip(ours: Any) -> None:
    sent = counted(ours)
    await ours.group_send("nobody", {"type": "t"})
    assert sent == ["EVALSHA"]


@pytest.fixture
async def other(ours: Any) -> AsyncIterator[Any]:
    """Another process's layer (channels-redis's own) on the same Redis keys as ``ours``."""
    async with made(Upstream, prefix=ours.prefix) as layer:
        yield layer


async def joined_then_sent(ours: Any, other: Any, count: int) -> list[str]:
    """``count`` channels of ``other`` join group g, then ``ours`` sends it message 0."""
    channels = [await other.new_channel(prefix="hub.") for _ in range(count)]
    for channel in channels:
        await other.group_add("g", channel)
    await ours.group_send("g", {"type": "t", "n": 0})
    return channels


async def test_a_member_that_joins_between_sends_gets_the_next(ours: Any, other: Any) -> None:
    [early] = await joined_then_sent(ours, other, 1)
    late = await other.new_channel(prefix="hub.")  # the same channel key as early's
    await other.group_add("g", late)
    sent = counted(ours)
    await ours.group_send("g", {"type": "t", "n": 1})
    assert sent == ["EVALSHA", "EVALSHA"]  # the members changed: read, then sent
    # Received by channels-redis's unmodified layer.
    assert [m["n"] for m in await drain(other, early)] == [0, 1]
    assert [m["n"] for m in await drain(other, late)] == [1]


async def test_a_member_that_leaves_between_sends_gets_nothing_more(ours: Any, other: Any) -> None:
    staying, leaving = await joined_then_sent(ours, other, 2)
    await other.group_discard("g", leaving)
    joining = await other.new_channel(prefix="hub.")  # as many members, not the same ones
    await other.group_add("g", joining)
    await ours.group_send("g", {"type": "t", "n": 1})
    assert [m["n"] for m in await drain(other, staying)] == [0, 1]
    assert [m["n"] for m in await drain(other, leaving)] == [0]
    assert [m["n"] for m in await drain(other, joining)] == [1]


async def test_a_member_that_expires_between_sends_is_dropped(ours: Any, other: Any) -> None:
    fresh, expiring = await joined_then_sent(ours, other, 2)
    # It joined longer than group_expiry ago: the next send drops it from the group.
    await ours.connection(0).zadd(ours._group_key("g"), {expiring: 1})
    await ours.group_send("g", {"type": "t", "n": 1})
    assert [m["n"] for m in await drain(other, fresh)] == [0, 1]
    assert [m["n"] for m in await drain(other, expiring)] == [0]
    members = await ours.connection(0).zrange(ours._group_key("g"), 0, -1)
    assert [m.decode() for m in members] == [fresh]


async def test_over_capacity_is_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with made(RedisChannelLayer, capacity=1) as layer:
        full, free = "full.channel", "free.channel"  # two keys (process channels share one)
        await layer.group_add("g", full)
        await layer.group_send("g", {"type": "t", "n": 0})
        await layer.group_add("g", free)
        with caplog.at_level(logging.INFO, logger="realtime.layer"):
            await layer.group_send("g", {"type": "t", "n": 1})
        assert "1 of 2 channels over capacity in group g" in caplog.messages
        assert [m["n"] for m in await drain(layer, full)] == [0]
        assert [m["n"] for m in await drain(layer, free)] == [1]


async def test_members_that_keep_changing_are_sent_to_in_two_steps(ours: Any) -> None:
    hub = await ours.new_channel(prefix="hub.")
    await ours.group_add("g", hub)
    await ours.group_send("g", {"type": "t", "n": 0})
    connection = ours.connection(0)
    uncounted = connection.execute_command
    sent = counted(ours)
    counting = connection.execute_command
    joined: list[str] = []

    async def a_member_joins_first(*args: Any, **options: Any) -> Any:
        if args[0] == "EVALSHA":
            joined.append(await ours.new_channel(prefix="hub."))
            await uncounted("ZADD", ours._group_key("g"), time.time(), joined[-1])
        return await counting(*args, **options)

    connection.execute_command = a_member_joins_first
    await ours.group_send("g", {"type": "t", "n": 1})
    assert sent == ["EVALSHA"] * layer_module.SEND_ATTEMPTS + ["EVAL", "EVAL"]
    for channel in [hub, *joined]:
        assert [m["n"] for m in await drain(ours, channel)][-1:] == [1]


async def test_members_on_other_hosts_than_the_group_are_sent_to_in_two_steps() -> None:
    # Two "hosts": two databases of the test Redis (not the workers' 13 and 14, see
    # conftest.py); a member's messages must land on its own.
    base = redis_url().rsplit("/", 1)[0]
    async with made(RedisChannelLayer, hosts=[f"{base}/11", f"{base}/12"]) as ours:
        channels = [f"m{n}.channel" for n in range(4)]  # a key each
        hosts = [ours.consistent_hash(c) for c in channels]
        assert set(hosts) == {0, 1}  # else pick other names
        for channel in channels:
            await ours.group_add("g", channel)
        for n in (0, 1):
            await ours.group_send("g", {"type": "t", "n": n})
        # Read where group_send's mapping (channels-redis's) puts them: channels-redis's
        # receive polls the hosts of a plain channel in turn, seconds apart.
        for channel, host in zip(channels, hosts, strict=True):
            key = ours.prefix + channel
            queued = await ours.connection(host).zrange(key, 0, -1)
            assert [ours.deserialize(m)["n"] for m in queued] == [0, 1]
            assert await ours.connection(1 - host).exists(key) == 0


async def test_a_script_missing_from_redis_is_sent_whole(
    ours: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As after a SCRIPT FLUSH or a Redis restart: EVALSHA fails, EVAL runs (and caches) it.
    monkeypatch.setattr(redis_scripts, "_sha", lambda script: "0" * 40)
    hub = await ours.new_channel(prefix="hub.")
    await ours.group_add("g", hub)
    await ours.group_send("g", {"type": "t", "n": 0})
    sent = counted(ours)
    await ours.group_send("g", {"type": "t", "n": 1})
    assert sent == ["EVALSHA", "EVAL"]
    assert [m["n"] for m in await drain(ours, hub)] == [0, 1]
