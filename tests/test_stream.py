"""The SSE consumer driven in-process through ASGI, with the real in-memory channel layer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from realtime import bus, lifecycle, runs
from realtime.hub import get_hub
from realtime.store import get_store, reset_memory_store
from realtime.stream import EventStreamConsumer
from streaming.events import TaskEvent
from tests.fakes import task_event as event
from tests.sse import SSEEvent, parse_stream

ALICE, BOB = 101, 202
EPOCH = "EpochOne"


@pytest.fixture(autouse=True)
def in_memory_layer_and_store(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # Pinned here: the integration tests' session fixture renames the topics for the
    # rest of the session, and these tests must not depend on whether they ran first.
    settings.TASKSTREAM = {
        **settings.TASKSTREAM,
        "HEARTBEAT_SECONDS": 30.0,
        "REDIS_URL": "",
        "TOPIC_EVENTS": "task.events",
    }
    reset_memory_store()


async def push(events: list[TaskEvent], *, publish: list[TaskEvent] | None = None) -> None:
    """What consume_events does: store, push (all, or only ``publish``: the rest is
    "lost" by the layer), record heads."""
    store = get_store()
    await store.set_epoch("task.events", EPOCH)
    prevs = await store.append(events)
    chosen = [(e, p) for e, p in zip(events, prevs, strict=True) if publish is None or e in publish]
    await bus.publish(get_channel_layer(), [e for e, _ in chosen], [p for _, p in chosen], EPOCH)
    heads: dict[tuple[str, int], int] = {}
    for e in events:
        key = (e.position.source, e.position.partition)
        heads[key] = max(heads.get(key, -1), e.position.offset)
    await store.set_heads(heads)


def cursor_id(offset: int, partition: int = 0) -> str:
    return f"task.events:{partition}:{offset}@{EPOCH}"


def token(user_id: int, lifetime: timedelta | None = None) -> str:
    access = AccessToken()
    access["user_id"] = user_id
    if lifetime is not None:
        access.set_exp(lifetime=lifetime)
    return str(access)


class Stream:
    """One HTTP request to the consumer, read as SSE."""

    def __init__(self, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/api/v1/events/stream",
            "query_string": query,
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
    bob_stream = Stream(bearer(BOB))
    await bob_stream.open()
    sent = [event(ALICE, offset) for offset in (3, 7, 9)]
    await push([sent[0], event(BOB, 4), sent[1], event(BOB, 8), sent[2]])
    received = await alice_stream.events(3)
    assert [e.id for e in received] == [cursor_id(3), cursor_id(7), cursor_id(9)]
    assert [json.loads(e.data) for e in received] == [e.envelope() for e in sent]
    bob_received = await bob_stream.events(2)
    assert {json.loads(e.data)["user_id"] for e in bob_received} == {BOB}
    await bob_stream.disconnect()


async def test_a_message_is_encoded_once_for_all_of_a_user_s_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await push([event(ALICE, 0)])  # the streams start at this head: cursor task.events:0:0
    streams = [Stream(bearer(ALICE)) for _ in range(3)]
    for stream in streams:
        await stream.open()
    await push([event(ALICE, 1)])
    for stream in streams:  # each writer is past its replay, live
        assert [e.id for e in await stream.events(1)] == [cursor_id(1)]
    encoded: list[int] = []

    def counting(items: Any) -> bytes:
        encoded.append(len(items))
        return real(items)

    real = runs.encode
    monkeypatch.setattr(runs, "encode", counting)
    sent = [event(ALICE, n) for n in (2, 3, 4)]
    await push(sent)
    for stream in streams:
        received = (await stream.events(4))[1:]
        assert [e.id for e in received] == [cursor_id(2), cursor_id(3), cursor_id(4)]
        assert [json.loads(e.data) for e in received] == [e.envelope() for e in sent]
        await stream.disconnect()
    assert encoded == [3]  # one run of three frames, for the three streams


async def test_a_position_already_sent_is_not_sent_again(alice_stream: Stream) -> None:
    first, second = event(ALICE, 5), event(ALICE, 6)
    await push([first, second])
    await push([first, second, event(ALICE, 7)])  # a consumer restart re-reads the batch
    received = await alice_stream.events(3)
    assert [e.id for e in received] == [cursor_id(5), cursor_id(6), cursor_id(7)]


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


async def test_a_stream_whose_redis_clean_up_hangs_still_ends_within_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis unreachable: the lease release would retry for seconds and hold the connection
    (and a node told to stop); it is abandoned after CLEANUP_SECONDS, the TTL expires it."""
    stream = Stream(bearer(ALICE))
    await stream.open()

    async def unreachable(*_args: Any) -> None:
        await asyncio.sleep(60)

    monkeypatch.setattr(type(get_store()), "release_leases", unreachable)
    started = asyncio.get_running_loop().time()
    await stream.disconnect()
    assert asyncio.get_running_loop().time() - started < 2
    assert ALICE not in get_hub().by_user


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
            "events": [(ALICE, [bus.to_item(event(ALICE, n), n - 1, EPOCH) for n in range(5)])],
        }
    )
    body = await stream.until_end()
    ids = [e.id for e in parse_stream(body.split("\n")) if isinstance(e, SSEEvent) and e.id]
    # Nothing was thinned: the stream ended, and the client resumes after its last id.
    assert ids == []
    await stream.comm.send_input({"type": "http.disconnect"})
    await stream.comm.wait(5)
    assert ALICE not in get_hub().by_user


async def test_the_stream_ends_when_the_token_expires() -> None:
    stream = Stream(bearer(ALICE, lifetime=timedelta(seconds=1)))
    assert (await stream.open())["status"] == 200
    await stream.until_end(within=5)
    await stream.comm.send_input({"type": "http.disconnect"})
    await stream.comm.wait(5)


# --- resume, reset, holes (issue #3), on the in-memory store -------------------------


def with_cursor(cursor: str) -> list[tuple[bytes, bytes]]:
    return [*bearer(ALICE), (b"last-event-id", cursor.encode())]


async def test_last_event_id_resumes_exactly_after_the_cursor() -> None:
    events = [event(ALICE, n) for n in range(30)]
    await push(events)
    stream = Stream(with_cursor(cursor_id(9)))
    start = await stream.open()
    assert dict(start["headers"])[b"taskstream-resumed-from"] == cursor_id(9).encode()
    more = [event(ALICE, n) for n in range(30, 40)]
    await push(more)
    received = await stream.events(30)
    assert [e.id for e in received] == [cursor_id(n) for n in range(10, 40)]
    assert [json.loads(e.data) for e in received] == [e.envelope() for e in events[10:] + more]
    await stream.disconnect()


async def test_the_header_wins_over_the_query_parameter() -> None:
    await push([event(ALICE, n) for n in range(25)])
    query = f"last_event_id={cursor_id(9)}".encode()
    stream = Stream(with_cursor(cursor_id(19)), query=query)
    await stream.open()
    received = await stream.events(5)
    assert [e.id for e in received] == [cursor_id(n) for n in range(20, 25)]
    await stream.disconnect()
    by_query = Stream(bearer(ALICE), query=query)
    await by_query.open()
    assert [e.id for e in await by_query.events(15)] == [cursor_id(n) for n in range(10, 25)]
    await by_query.disconnect()


@pytest.mark.parametrize(
    "cursor", ["garbage", "task.events:0:5", "task.events:x:5@E", "a:1:2@E,a:1:3@E"]
)
async def test_an_unparsable_cursor_is_400_json_before_any_stream_bytes(cursor: str) -> None:
    stream = Stream(with_cursor(cursor))
    start = await stream.open()
    assert start["status"] == 400
    body = await stream.comm.receive_output(5)
    assert json.loads(body["body"])["code"] == "bad_cursor"


async def test_a_cursor_naming_another_source_is_403() -> None:
    await push([event(ALICE, 1)])
    stream = Stream(with_cursor(f"billing.events:0:1@{EPOCH}"))
    start = await stream.open()
    assert start["status"] == 403
    assert json.loads((await stream.comm.receive_output(5))["body"])["code"] == "source_forbidden"
    assert ALICE not in get_hub().by_user  # refused streams leave nothing behind


async def test_a_cursor_from_another_epoch_gets_an_explicit_reset_first() -> None:
    await push([event(ALICE, n) for n in range(3)])
    stream = Stream(with_cursor("task.events:0:1@OldTopic"))
    start = await stream.open()
    assert start["status"] == 200
    assert dict(start["headers"])[b"taskstream-resumed-from"] == b"earliest"
    received = await stream.events(3)
    frames = [e for e in parse_stream(stream.buffer.split("\n")) if isinstance(e, SSEEvent)]
    assert [f.event for f in frames][:2] == ["stream-open", "stream-reset"]
    reset = json.loads(frames[1].data)
    assert reset["reason"] == "epoch-changed"
    assert reset["resumed_from"] == "earliest"
    assert [e.id for e in received] == [cursor_id(n) for n in range(3)]
    await stream.disconnect()


async def test_a_cursor_beyond_the_head_gets_a_reset() -> None:
    await push([event(ALICE, n) for n in range(3)])
    stream = Stream(with_cursor(cursor_id(99)))
    await stream.open()
    await stream._read()
    frames = [e for e in parse_stream(stream.buffer.split("\n")) if isinstance(e, SSEEvent)]
    assert frames[1].event == "stream-reset"
    assert json.loads(frames[1].data)["reason"] == "cursor-ahead"
    await push([event(ALICE, 3)])
    assert [e.id for e in await stream.events(1)] == [cursor_id(3)]
    await stream.disconnect()


async def test_a_message_the_layer_lost_is_filled_from_the_store_in_order(
    alice_stream: Stream,
) -> None:
    events = [event(ALICE, n) for n in (10, 11, 12, 13)]
    await push(events, publish=[events[0], events[3]])  # 11 and 12 never arrive live
    received = await alice_stream.events(4)
    assert [e.id for e in received] == [cursor_id(n) for n in (10, 11, 12, 13)]


async def test_an_idle_stream_advances_its_cursor_past_other_users_records(settings: Any) -> None:
    settings.TASKSTREAM = {**settings.TASKSTREAM, "HEARTBEAT_SECONDS": 0.05}
    await push([event(ALICE, 0)])
    stream = Stream(bearer(ALICE))
    await stream.open()
    await push([event(BOB, n) for n in range(1, 50)])  # same partition, not Alice's
    async with asyncio.timeout(5):
        while f"id: {cursor_id(49)}\n\n" not in stream.buffer:
            await stream._read()
    assert "task.progress" not in stream.buffer  # id-only frames carry no payload
    await stream.disconnect()


async def test_the_sixth_concurrent_stream_of_a_user_gets_429(settings: Any) -> None:
    streams = [Stream(bearer(ALICE)) for _ in range(5)]
    for s in streams:
        assert (await s.open())["status"] == 200
    sixth = Stream(bearer(ALICE))
    start = await sixth.open()
    assert start["status"] == 429
    assert dict(start["headers"])[b"retry-after"] == b"5"
    assert json.loads((await sixth.comm.receive_output(5))["body"])["code"] == "too_many_streams"
    other = Stream(bearer(BOB))
    assert (await other.open())["status"] == 200
    await streams[0].disconnect()
    seventh = Stream(bearer(ALICE))
    assert (await seventh.open())["status"] == 200  # a closed stream frees its slot
    for s in [*streams[1:], seventh, other]:
        await s.disconnect()


async def test_a_stream_ends_cleanly_after_its_maximum_lifetime(settings: Any) -> None:
    settings.TASKSTREAM = {**settings.TASKSTREAM, "STREAM_MAX_SECONDS": 1.0}
    stream = Stream(bearer(ALICE))
    await stream.open()
    body = await stream.until_end()
    assert body.endswith("retry: 3000\n\n")  # a last retry hint, then a clean end


async def test_drain_ends_open_streams_and_new_ones_at_once() -> None:
    stream = Stream(bearer(ALICE))
    await stream.open()
    get_hub().drain(0.2)
    body = await stream.until_end()
    assert body.endswith("retry: 3000\n\n")
    late = Stream(bearer(BOB))
    assert (await late.open())["status"] == 200
    assert (await late.until_end()) == "retry: 3000\n\n"
    get_hub().draining = False
    lifecycle.draining.clear()


async def test_a_draining_node_refuses_a_new_stream_without_asking_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis may be down (the reason the node is being replaced): a stream opened during the
    drain must not spend its retries on the open throttle before it is turned away."""

    async def unreachable(*_args: Any) -> int:
        raise AssertionError("asked Redis")

    monkeypatch.setattr(type(get_store()), "count_hit", unreachable)
    get_hub().drain(0.1)
    late = Stream(bearer(BOB))
    try:
        assert (await late.open())["status"] == 200
        assert (await late.until_end()) == "retry: 3000\n\n"
    finally:
        get_hub().draining = False
        lifecycle.draining.clear()


async def test_a_draining_node_behind_a_retrying_proxy_refuses_new_streams_with_503(
    settings: Any,
) -> None:
    settings.TASKSTREAM = {**settings.TASKSTREAM, "DRAIN_REFUSAL_STATUS": 503}
    get_hub().drain(0.1)
    late = Stream(bearer(BOB))
    start = await late.open()
    assert start["status"] == 503
    assert json.loads((await late.comm.receive_output(5))["body"])["code"] == "draining"
    get_hub().draining = False
    lifecycle.draining.clear()


async def test_the_writer_keeps_the_plans_cursor_not_a_copy(alice_stream: Stream) -> None:
    """One cursor per open stream: the plan's, advanced by the writer (issue #9, M4)."""
    await push([event(ALICE, 0)])
    assert len(await alice_stream.events(1)) == 1
    coroutine: Any = alice_stream.comm.future.get_coro()
    while coroutine.cr_code.co_qualname != "EventStreamConsumer.__call__":
        coroutine = coroutine.cr_await
    consumer = coroutine.cr_frame.f_locals["self"]
    assert consumer.cursor is consumer.plan.cursor
    assert consumer.cursor.offsets == {("task.events", 0): 0}
