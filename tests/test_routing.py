"""How the whole ASGI application routes a request (realtime.routing), and what an open
stream keeps suspended along the way (issue #9, M4: every frame and scope copy is kept for
the stream's life, and scanned by every full garbage collection)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.compatibility import is_double_callable
from channels.testing import ApplicationCommunicator

from realtime.routing import build_application, http_application, stream_application
from realtime.stream import EventStreamConsumer
from tests.test_stream import (
    ALICE,
    bearer,
    in_memory_layer_and_store,  # noqa: F401 (the autouse fixture, reused)
)


def request_scope(path: str, headers: list[tuple[bytes, bytes]], **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": headers,
        **extra,
    }


def suspended(task: asyncio.Future[Any]) -> list[Any]:
    """The coroutines a task is suspended in, outermost first."""
    assert isinstance(task, asyncio.Task)
    chain: list[Any] = []
    awaited: Any = task.get_coro()
    while hasattr(awaited, "cr_frame"):
        chain.append(awaited)
        awaited = awaited.cr_await
    return chain


async def test_an_open_stream_keeps_no_router_frame_and_no_scope_copy() -> None:
    scope = request_scope("/api/v1/events/stream", bearer(ALICE))
    comm = ApplicationCommunicator(build_application(), scope)
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    assert (await comm.receive_output(5))["status"] == 200
    await comm.receive_output(5)  # the opening frames: the stream is waiting now

    chain = suspended(comm.future)
    names = [c.cr_code.co_qualname for c in chain]
    # The server's scope reaches the consumer as it is (URLRouter passed on a copy).
    consumer = chain[names.index("EventStreamConsumer.__call__")].cr_frame.f_locals["self"]
    assert isinstance(consumer, EventStreamConsumer)
    assert consumer.scope is scope
    # Between the router of protocols and the consumer, only the request id's frame (it
    # clears the logging context when the response ends).
    assert names[:3] == [
        "ProtocolTypeRouter.__call__",
        "RequestIdMiddleware.__call__",
        "EventStreamConsumer.__call__",
    ]

    await comm.send_input({"type": "http.disconnect"})
    await comm.wait(5)


@pytest.mark.parametrize(
    ("path", "root_path", "routed"),
    [
        ("/api/v1/events/stream", "", "stream"),
        ("//api/v1/events/stream", "", "stream"),  # as URLRouter: leading slashes ignored
        ("/app/api/v1/events/stream", "/app", "stream"),
        ("/api/v1/events/stream/", "", "rest"),
        ("/api/v1/events/streams", "", "rest"),
        ("/api/v1/tasks", "", "rest"),
        ("/app/api/v1/tasks", "/app", "rest"),
    ],
)
async def test_the_stream_path_goes_to_the_stream_and_anything_else_to_django(
    path: str, root_path: str, routed: str
) -> None:
    calls: list[str] = []

    def recorder(name: str) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            calls.append(name)

        return app

    app = http_application(recorder("stream"), recorder("rest"))
    await app(request_scope(path, [], root_path=root_path), None, None)
    assert calls == [routed]


async def test_the_routers_are_taken_for_asgi_3_apps() -> None:
    """Plain functions returning a coroutine: marked, or a server would take them for
    ASGI 2 apps (uvicorn, asgiref's ``guarantee_single_callable``)."""
    assert not is_double_callable(stream_application())  # type: ignore[no-untyped-call]
    assert not is_double_callable(http_application(None, None))  # type: ignore[no-untyped-call]


async def test_cors_headers_reach_a_stream_and_a_preflight_is_answered(settings: Any) -> None:
    origin = b"https://app.example"
    settings.TASKSTREAM = {**settings.TASKSTREAM, "CORS_ALLOWED_ORIGINS": [origin.decode()]}
    scope = request_scope("/api/v1/events/stream", [*bearer(ALICE), (b"origin", origin)])
    comm = ApplicationCommunicator(build_application(), scope)
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await comm.receive_output(5)
    assert start["status"] == 200
    assert (b"access-control-allow-origin", origin) in start["headers"]
    assert "CorsMiddleware.__call__" not in [c.cr_code.co_qualname for c in suspended(comm.future)]
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait(5)

    preflight = request_scope(
        "/api/v1/events/stream",
        [(b"origin", origin), (b"access-control-request-method", b"GET")],
        method="OPTIONS",
    )
    comm = ApplicationCommunicator(build_application(), preflight)
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await comm.receive_output(5)
    assert start["status"] == 204
    assert (b"access-control-allow-origin", origin) in start["headers"]
    await comm.wait(5)
