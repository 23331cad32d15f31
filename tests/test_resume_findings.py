"""Resume holes found by trying (#10): a partition the cursor does not name, and Kafka scans
a user could force at will. Driven in-process, like tests/test_stream.py."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from typing import Any

import pytest

from realtime import stream as stream_module
from realtime.store import RedisHotStore, StoredEvent, get_store
from streaming.cursor import PartitionKey
from tests.fakes import task_event as event
from tests.sse import SSEEvent, parse_stream
from tests.test_stream import (
    ALICE,
    EPOCH,
    Stream,
    cursor_id,
    in_memory_layer_and_store,  # noqa: F401 (the autouse fixture, reused)
    push,
    with_cursor,
)


def frames(stream: Stream) -> list[SSEEvent]:
    return [e for e in parse_stream(stream.buffer.split("\n")) if isinstance(e, SSEEvent)]


async def test_a_partition_the_cursor_does_not_name_is_replayed_from_its_start() -> None:
    # Alice's events went to partition 0, then (a partition-count change, or a producer
    # choosing partitions) some to partition 1 while she was away.
    await push([event(ALICE, n) for n in range(5)])
    await push([event(ALICE, n, partition=1) for n in (3, 7, 8)])
    stream = Stream(with_cursor(cursor_id(4)))
    start = await stream.open()
    assert start["status"] == 200
    received = await stream.events(3, within=3)
    assert [e.id for e in received] == [
        f"task.events:0:4@{EPOCH},task.events:1:{n}@{EPOCH}" for n in (3, 7, 8)
    ]
    assert "stream-reset" not in [f.event for f in frames(stream)]
    await stream.disconnect()


class CountingKafka:
    """A Kafka replayer that can serve anything and counts what it is asked to read."""

    def __init__(self) -> None:
        self.reads = 0

    async def check(self, key: PartitionKey, after: int, before: int | None) -> str | None:
        return None

    async def read(
        self,
        user_id: int,
        key: PartitionKey,
        after: int,
        before: int | None,
        epoch: str | None,
    ) -> list[StoredEvent]:
        self.reads += 1
        return []


@pytest.mark.services
async def test_low_cursors_of_a_user_without_store_entries_cannot_force_a_scan_per_open(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("needs REDIS_URL (make test starts Redis)")
    settings.TASKSTREAM = {
        **settings.TASKSTREAM,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"ts-test-scan-{uuid.uuid4().hex[:8]}",
        "REPLAY_KAFKA_PER_MINUTE": 3,
        "MAX_STREAMS_PER_USER": 20,
    }
    store = get_store()
    assert isinstance(store, RedisHotStore)
    kafka = CountingKafka()
    monkeypatch.setattr(stream_module, "get_kafka_replayer", lambda: kafka)
    try:
        # The partition moved on (other users' records); Alice has nothing in the store,
        # so the store cannot prove the range after her cursor holds nothing of hers.
        await store.set_epoch("task.events", EPOCH)
        await store.set_heads({("task.events", 0): 150_000})
        reasons: list[str | None] = []
        opened: list[Stream] = []
        first_window = int(time.time()) // 60
        for _ in range(8):
            stream = Stream(with_cursor(cursor_id(5)))
            opened.append(stream)
            assert (await stream.open())["status"] == 200
            await stream._read()
            await stream.comm.send_input({"type": "http.disconnect"})
            resets = [json.loads(f.data) for f in frames(stream) if f.event == "stream-reset"]
            reasons.append(resets[0]["reason"] if resets else None)
        windows = int(time.time()) // 60 - first_window + 1
        reads = kafka.reads  # (later heartbeats could read again in a new minute)
        for stream in opened:
            with contextlib.suppress(BaseException):
                await stream.comm.wait(0.2)
        # The opens within the budget read Kafka (3 a minute); the rest are told so, and
        # scan nothing. Today's code scanned once per open.
        assert reads <= 3 * windows, (reads, reasons)
        assert reasons.count("replay-limit") == 8 - reads, reasons
        assert reasons[:3] == [None] * 3
    finally:
        keys = [k async for k in store.redis.scan_iter(f"{store.p}:*")]
        if keys:
            await store.redis.delete(*keys)
        await store.close()
