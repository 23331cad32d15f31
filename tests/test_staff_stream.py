"""The staff scope (#13): ``?scope=staff`` streams every user's events to staff who may view
tasks, live only; the hub joins every shard while one is open, and only then. Driven
in-process through the routing's stream application, with the in-memory layer and store
(tests/test_stream.py) and real users in the database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission, User
from django.db import connections
from django.test import Client

from realtime.bus import SHARDS, shard_group, shard_of
from realtime.hub import get_hub
from realtime.routing import stream_application
from tests.fakes import task_event as event
from tests.sse import SSEEvent, parse_stream
from tests.test_stream import (
    EPOCH,
    Stream,
    bearer,
    cursor_id,
    in_memory_layer_and_store,  # noqa: F401 (the autouse fixture, reused)
    push,
)

pytestmark = pytest.mark.django_db(transaction=True)

ALICE, BOB = 101, 202  # event owners: the streams never look them up


@pytest.fixture(autouse=True)
async def _close_thread_connections() -> AsyncIterator[None]:
    """The staff check queries on Channels' database thread, whose connection outlives
    the test (CONN_MAX_AGE) and would keep the test database from being dropped."""
    yield
    await database_sync_to_async(connections.close_all)()


class Routed(Stream):
    """A request to the stream path as the server routes it (by ``scope``)."""

    def __init__(self, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> None:
        super().__init__(headers, query)
        self.comm = ApplicationCommunicator(stream_application(), self.comm.scope)

    async def refusal(self) -> tuple[int, dict[str, Any]]:
        start = await self.open()
        body = json.loads((await self.comm.receive_output(5))["body"])
        return start["status"], body


def frames(stream: Stream) -> list[SSEEvent]:
    return [e for e in parse_stream(stream.buffer.split("\n")) if isinstance(e, SSEEvent)]


async def session_cookie(user: User) -> list[tuple[bytes, bytes]]:
    """The cookie header of a browser logged in to the admin as ``user``."""

    def login() -> str:
        client = Client()
        client.force_login(user)
        return str(client.cookies[django_settings.SESSION_COOKIE_NAME].value)

    key = await database_sync_to_async(login)()
    return [(b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={key}".encode())]


@pytest.fixture
def root(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_superuser("root", password="pw")


@pytest.fixture
def clerk(django_user_model: type[User]) -> User:
    """Staff without the permission to view tasks."""
    return django_user_model.objects.create_user("clerk", password="pw", is_staff=True)


@pytest.fixture
def viewer(django_user_model: type[User]) -> User:
    """Staff with only the permission to view tasks."""
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_asynctask"))
    return user


def layer_groups() -> dict[str, Any]:
    groups: dict[str, Any] = get_channel_layer().groups
    return groups


async def test_a_staff_stream_gets_every_users_events_with_their_positions(root: User) -> None:
    stream = Routed(bearer(root.pk), b"scope=staff")
    start = await stream.open()
    assert start["status"] == 200
    hub = get_hub()
    assert hub.joined == set(range(SHARDS))
    assert all(hub.channel in layer_groups().get(shard_group(s), {}) for s in range(SHARDS))

    await push([event(ALICE, 0), event(BOB, 1), event(ALICE, 2, partition=1)])
    received = await stream.events(3)
    owners = [json.loads(e.data)["user_id"] for e in received]
    assert sorted(owners) == [ALICE, ALICE, BOB]
    # Each id is that event's own position, not a cursor accumulated over partitions.
    assert sorted(str(e.id) for e in received) == sorted(
        [cursor_id(0), cursor_id(1), cursor_id(2, partition=1)]
    )
    opened = json.loads(frames(stream)[0].data)
    assert opened == {"user_id": root.pk, "scope": "staff"}

    await stream.disconnect()
    # The last watcher gone, the process is in no shard's group it does not need.
    assert hub.joined == set() and hub.watchers == set()
    assert all(hub.channel not in layer_groups().get(shard_group(s), {}) for s in range(SHARDS))


async def test_a_process_stays_in_the_bus_while_a_users_stream_needs_it(
    root: User,
) -> None:
    alice = Stream(bearer(ALICE))
    assert (await alice.open())["status"] == 200
    hub = get_hub()
    assert hub.joined == {shard_of(ALICE)}
    staff = Routed(bearer(root.pk), b"scope=staff")
    assert (await staff.open())["status"] == 200
    assert hub.joined == set(range(SHARDS))
    await staff.disconnect()
    # The last watcher left; Alice's shard stays: her stream still needs it.
    assert hub.watchers == set()
    assert hub.joined == {shard_of(ALICE)}
    assert hub.channel in layer_groups().get(shard_group(shard_of(ALICE)), {})
    await push([event(ALICE, 0)])
    assert [e.id for e in await alice.events(1)] == [cursor_id(0)]
    await alice.disconnect()
    assert hub.joined == set()


async def test_one_users_view_takes_only_that_users_events(viewer: User, alice_user: User) -> None:
    alice = alice_user.pk
    stream = Routed(bearer(viewer.pk), f"scope=staff&user={alice}".encode())
    assert (await stream.open())["status"] == 200
    assert get_hub().joined == {shard_of(alice)}  # a user's subscriber, not a watcher
    await push([event(alice + 1, 0), event(alice, 1), event(alice, 2)])
    received = await stream.events(2)
    assert [e.id for e in received] == [cursor_id(1), cursor_id(2)]
    await stream.disconnect()


async def test_a_reconnect_is_told_the_staff_stream_is_live_only(root: User) -> None:
    await push([event(ALICE, n) for n in range(3)])
    headers = [*bearer(root.pk), (b"last-event-id", cursor_id(0).encode())]
    stream = Routed(headers, b"scope=staff")
    start = await stream.open()
    assert dict(start["headers"])[b"taskstream-resumed-from"] == b"head"
    await stream._read()
    control = [(f.event, json.loads(f.data)) for f in frames(stream)]
    assert control[1] == (
        "stream-reset",
        {"reason": "live-only", "requested": cursor_id(0), "resumed_from": "head"},
    )
    await push([event(ALICE, 3)])
    assert [e.id for e in await stream.events(1)] == [cursor_id(3)]  # nothing replayed
    await stream.disconnect()


async def test_the_admin_session_opens_the_staff_stream(viewer: User) -> None:
    stream = Routed(await session_cookie(viewer), b"scope=staff")
    assert (await stream.open())["status"] == 200
    await push([event(BOB, 0)])
    assert [e.id for e in await stream.events(1)] == [f"task.events:0:0@{EPOCH}"]
    await stream.disconnect()


async def test_anonymous_is_401_and_a_bad_session_is_no_credential() -> None:
    status, body = await Routed([], b"scope=staff").refusal()
    assert (status, body["code"]) == (401, "not_authenticated")
    cookie = [(b"cookie", f"{django_settings.SESSION_COOKIE_NAME}=forged".encode())]
    status, body = await Routed(cookie, b"scope=staff").refusal()
    assert (status, body["code"]) == (401, "not_authenticated")
    status, body = await Routed([(b"authorization", b"Bearer nope")], b"scope=staff").refusal()
    assert (status, body["code"]) == (401, "token_not_valid")


async def test_non_staff_and_staff_without_the_view_permission_get_403(
    alice_user: User, clerk: User
) -> None:
    for headers in (bearer(alice_user.pk), await session_cookie(alice_user), bearer(clerk.pk)):
        status, body = await Routed(headers, b"scope=staff").refusal()
        assert (status, body["code"]) == (403, "staff_only")
    assert get_hub().joined == set()


@pytest.mark.parametrize(
    ("query", "code"),
    [
        (b"scope=admin", "bad_scope"),
        (b"scope=staff&since=2026-01-01T00:00:00Z", "bad_since"),
        (b"scope=staff&user=abc", "bad_user"),
        (b"scope=staff&user=0", "bad_user"),
        (b"scope=staff&user=99999999999", "bad_user"),
        (b"user=5", "bad_user"),
        (b"scope=staff&last_event_id=garbage", "bad_cursor"),
    ],
)
async def test_bad_parameters_are_400_naming_them(root: User, query: bytes, code: str) -> None:
    status, body = await Routed(bearer(root.pk), query).refusal()
    assert (status, body["code"]) == (400, code), body


async def test_an_unknown_user_is_404(root: User) -> None:
    status, body = await Routed(bearer(root.pk), b"scope=staff&user=987654").refusal()
    assert (status, body["code"]) == (404, "unknown_user")


async def test_a_full_staff_buffer_ends_the_stream(root: User, settings: Any) -> None:
    settings.TASKSTREAM = {**settings.TASKSTREAM, "STREAM_QUEUE_SIZE": 3}
    stream = Routed(bearer(root.pk), b"scope=staff")
    assert (await stream.open())["status"] == 200
    hub = get_hub()
    (watcher,) = hub.watchers
    watcher.sending_since = 0.0
    # Offered directly while the writer waits: four items into a buffer of three.
    hub.deliver(
        {
            "type": "ts.events",
            "events": [[ALICE, [["task.events", 0, n, -1, EPOCH, "x"] for n in range(4)]]],
        }
    )
    await stream.until_end()
    assert watcher.closed_reason == "overflow"


@pytest.fixture
def alice_user(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password="pw")
