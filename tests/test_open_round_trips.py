"""How many round trips to Redis a stream open costs (issue #9: one per store).

The consumer runs in-process against the real Redis hot store; every write a redis-py
connection makes (one per command, one per pipeline or script) is counted from the request
until the replayed events are out.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from realtime.store import get_store
from tests.fakes import task_event
from tests.test_stream import EPOCH, Stream, bearer, push

pytestmark = pytest.mark.services
USER = 4242


class Counter:
    def __init__(self) -> None:
        self.sends = 0
        self.counting = False


@pytest.fixture
def redis_store(settings: Any) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if not url:
        raise pytest.UsageError("REDIS_URL is not set: run `make test` (it starts Redis)")
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    prefix = f"ts-open-test-{uuid.uuid4().hex}"
    settings.TASKSTREAM = {
        **settings.TASKSTREAM,
        "HEARTBEAT_SECONDS": 30.0,
        "REDIS_URL": url,
        "REDIS_PREFIX": prefix,
        "TOPIC_EVENTS": "task.events",
    }
    yield prefix


@pytest.fixture
async def counter(redis_store: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Counter]:
    counted = Counter()
    original = AbstractConnection.send_packed_command

    async def send(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        if counted.counting:
            counted.sends += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send)
    yield counted
    store = get_store()
    keys = [k async for k in store.redis.scan_iter(f"{redis_store}:*")]  # type: ignore[attr-defined]
    if keys:
        await store.redis.delete(*keys)  # type: ignore[attr-defined]
    await store.close()


async def open_and_read(headers: list[tuple[bytes, bytes]], events: int) -> Stream:
    stream = Stream(headers)
    start = await stream.open()
    assert start["status"] == 200
    await stream.events(events)
    return stream


@pytest.mark.parametrize(
    ("last_event_id", "replayed"),
    [
        (None, 0),  # live from the newest
        (f"task.events:0:0@{EPOCH}", 5),  # partition 1 is not named: replayed from its start
        (f"task.events:0:0@{EPOCH},task.events:1:0@{EPOCH}", 4),
    ],
)
async def test_an_open_is_one_round_trip_to_redis(
    counter: Counter, last_event_id: str | None, replayed: int
) -> None:
    await push([task_event(USER, offset, partition=p) for offset in range(3) for p in (0, 1)])
    # A first open warms the pool (connect, client set-info) and loads the script.
    warm = await open_and_read(bearer(USER), 0)
    await warm.disconnect()
    headers = bearer(USER)
    if last_event_id is not None:
        headers.append((b"last-event-id", last_event_id.encode()))
    counter.counting = True
    stream = await open_and_read(headers, replayed)  # open, and replay what it must
    counter.counting = False
    received = await stream.events(replayed)
    await stream.disconnect()
    assert len(received) == replayed
    assert counter.sends == 1
