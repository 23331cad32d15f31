"""The SSE consumer driven in-process through ASGI, with the real in-memory channel layer."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from realtime import bus
from realtime.events import Position, TaskEvent
from realtime.hub import get_hub
from realtime.stream import EventStreamConsumer
from tests.sse import SSEEvent, parse_stream

ALICE, BOB = 101, 202


@pytest.fixture(autouse=True)
def in_memory_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.TASKSTREAM = {**settings.TASKSTREAM, "HEARTBEAT_SECONDS": 30.0}


def token(user_id: int, lifetime: timedelta | None = None) -> str:
    access = AccessToken()
    access["user_id"] = user_id
    if lifetime is not None:
        access.set_exp(lifetime=lifetime)
    return str(access)


def event(user_id: int, offset: int, partition: int = 0, progress: int = 1) -> TaskEvent:
    return TaskEvent(
        event_id=str(uuid.uuid4()),
        event_type="task.progress",
        version=1,
        occurred_at=datetime.now(UTC),
        user_id=user_id,
        task_id=str(uuid.uuid4()),
        scope="user",
        data={"progress": progress, "message": f"m{offset}"},
        position=Position("task.events", partition, offset),
    )


class Stream:
    """One HTTP request to the consumer, read as SSE."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/api/v1/events/stream",
            "query_string": b"",
            "headers": headers,
        }
        self.comm = ApplicationCommunicator(EventStreamConsumer.as_asgi(), scope)
        self.buffer = ""
        self.ended = False

    async def open(self) -> dict[str, Any]:
        await self.comm.send_input({"type": "http.request", "body": b"", "more_body": False})
        start: dict[str, Any] = await self.comm.receive_output(5)
        return start

    async def events(self, count: int, within: float = 5) -> list[SSEEvent]:
        """Read until ``count`` events (not counting control frames) have arrived."""
        async with asyncio.timeout(within):
            while True:
                parsed = [
                    e
                    for e in parse_stream(self.buffer.split("\n"))
                    if isinstance(e, SSEEvent) and e.event.startswith("task.")
                ]
                if len(parsed) >= count or self.ended:
                    return parsed
                await self._read()

    async def until_end(self, within: float = 5) -> str:
        async with asyncio.timeout(within):
            while not self.ended:
                await self._read()
        return self.buffer

    async def _read(self) -> None:
        message = await self.comm.receive_output(10)
        assert message["type"] == "http.response.body"
        self.buffer += message["body"].decode()
        if not message.get("more_body", False):
            self.ended = True

    async def disconnect(self) -> None:
        await self.comm.send_input({"type": "http.disconnect"})
        await self.comm.wait(5)


def bearer(user_id: int, **kwargs: Any) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token(user_id, **kwargs)}".encode())]


@pytest.fixture
async def alice_stream() -> AsyncIterator[Stream]:
    stream = Stream(bearer(ALICE))
    start = await stream.open()
    assert start["status"] == 200
    yield stream
    if not stream.ended:
        await stream.disconnect()


async def test_no_credentials_is_401_json_and_no_stream() -> None:
    stream = Stream([])
    start = await stream.open()
    assert start["status"] == 401
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"www-authenticate"] == b'Bearer realm="taskstream"'
    body = await stream.comm.receive_output(5)
    assert json.loads(body["body"])["code"] == "not_authenticated"
    await stream.comm.wait(5)


@pytest.mark.parametrize(
    "header",
    [
        b"Bearer not-a-jwt",
        b"Basic YWxpY2U6cHc=",
        b"Bearer " + token(ALICE, lifetime=timedelta(seconds=-5)).encode(),
    ],
)
async def test_bad_credentials_are_401_invalid_token(header: bytes) -> None:
    stream = Stream([(b"authorization", header)])
    start = await stream.open()
    assert start["status"] == 401
    assert b'error="invalid_token"' in dict(start["headers"])[b"www-authenticate"]


async def test_the_stream_cookie_authenticates(settings: Any) -> None:
    name = settings.TASKSTREAM["AUTH_COOKIE"]
    stream = Stream([(b"cookie", f"other=1; {name}={token(ALICE)}".encode())])
    assert (await stream.open())["status"] == 200
    await stream.disconnect()


async def test_stream_headers_and_opening_frames(alice_stream: Stream) -> None:
    await alice_stream._read()
    assert alice_stream.buffer.startswith(": taskstream\nretry: 3000\n\n")
    opening = list(parse_stream(alice_stream.buffer.split("\n")))
    assert opening[0] == 3000
    assert opening[1] == SSEEvent("stream-open", json.dumps({"user_id": ALICE}), None)


async def test_the_user_receives_own_events_in_order_and_nobody_elses(alice_stream: Stream) -> None:
    layer = get_channel_layer()
    bob_stream = Stream(bearer(BOB))
    await bob_stream.open()
    sent = [event(ALICE, offset) for offset in (3, 7, 9)]
    await bus.publish(layer, [sent[0], event(BOB, 4), sent[1], event(BOB, 8), sent[2]])
    received = await alice_stream.events(3)
    assert [e.id for e in received] == ["task.events:0:3", "task.events:0:7", "task.events:0:9"]
    assert [json.loads(e.data) for e in received] == [e.envelope() for e in sent]
    bob_received = await bob_stream.events(2)
    assert {json.loads(e.data)["user_id"] for e in bob_received} == {BOB}
    await bob_stream.disconnect()


async def test_a_position_already_sent_is_not_sent_again(alice_stream: Stream) -> None:
    layer = get_channel_layer()
    first = event(ALICE, 5)
    await bus.publish(layer, [first, event(ALICE, 6)])
    await bus.publish(layer, [first, event(ALICE, 6), event(ALICE, 7)])  # a consumer restart
    received = await alice_stream.events(3)
    assert [e.id for e in received] == ["task.events:0:5", "task.events:0:6", "task.events:0:7"]


async def test_disconnect_leaves_the_group_and_the_hub() -> None:
    layer = get_channel_layer()
    stream = Stream(bearer(ALICE))
    await stream.open()
    hub = get_hub()
    assert ALICE in hub.by_user
    assert layer.groups[bus.user_group(ALICE)]
    await stream.disconnect()
    assert ALICE not in hub.by_user
    assert bus.user_group(ALICE) not in layer.groups


async def test_an_idle_stream_sends_named_heartbeats(settings: Any) -> None:
    settings.TASKSTREAM = {**settings.TASKSTREAM, "HEARTBEAT_SECONDS": 0.05}
    stream = Stream(bearer(ALICE))
    await stream.open()
    async with asyncio.timeout(5):
        while stream.buffer.count("event: heartbeat\n") < 2:
            await stream._read()
    await stream.disconnect()


async def test_a_full_buffer_ends_the_stream_instead_of_dropping(settings: Any) -> None:
    settings.TASKSTREAM = {**settings.TASKSTREAM, "STREAM_QUEUE_SIZE": 2}
    stream = Stream(bearer(ALICE))
    await stream.open()
    # Delivered in one go, before the writer can drain: the third event does not fit.
    get_hub().deliver(
        {
            "type": bus.MESSAGE_TYPE,
            "user": ALICE,
            "events": [bus.to_item(event(ALICE, n)) for n in range(5)],
        }
    )
    body = await stream.until_end()
    ids = [e.id for e in parse_stream(body.split("\n")) if isinstance(e, SSEEvent) and e.id]
    # What was written is a gap-free prefix; the client resumes after its last id.
    assert ids == ["task.events:0:0", "task.events:0:1"]
    await stream.comm.send_input({"type": "http.disconnect"})
    await stream.comm.wait(5)
    assert ALICE not in get_hub().by_user


async def test_the_stream_ends_when_the_token_expires() -> None:
    stream = Stream(bearer(ALICE, lifetime=timedelta(seconds=1)))
    assert (await stream.open())["status"] == 200
    await stream.until_end(within=5)
    await stream.comm.send_input({"type": "http.disconnect"})
    await stream.comm.wait(5)
