"""What ``manage.py serve``'s protocol (realtime.server) keeps per connection: lists where
uvicorn keeps deques (issue #9, M4), with the request's messages and the disconnect still
reaching the application."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from realtime.server import BoundedHttpProtocol


class App:
    """Starts a streamed response, then waits for the disconnect."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.received = asyncio.Event()  # the request's own message
        self.disconnected = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"open\n", "more_body": True})
        while True:
            message = await receive()
            self.messages.append(message)
            self.received.set()  # seen once this task waits in receive() again
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """``app`` served with the protocol on a socket bound first: connections made before
    the server runs wait in its backlog."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    config = uvicorn.Config(app, http=BoundedHttpProtocol, lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    running = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield server, sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(running, 10)
        sock.close()


async def test_a_streamed_response_waits_on_lists_and_still_sees_the_disconnect() -> None:
    app = App()
    async with serving(app) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"open\n")).startswith(b"HTTP/1.1 200")
            await app.received.wait()

        (protocol,) = server.server_state.connections
        assert isinstance(protocol, BoundedHttpProtocol)
        assert type(protocol.pipeline) is not deque
        writable: Any = protocol.flow._is_writable_event._waiters
        assert type(writable) is list
        waiting: Any = protocol.cycle.message_event._waiters
        assert type(waiting) is list
        assert len(waiting) == 1  # the application's receive()

        writer.close()
        async with asyncio.timeout(5):
            await app.disconnected.wait()
        assert app.messages[-1] == {"type": "http.disconnect"}
        assert not waiting


async def test_pipelined_requests_are_answered_in_order() -> None:
    """The pipeline queue (a list here) keeps uvicorn's order: first in, first served."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = scope["path"].encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async with serving(app) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(f"GET /{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n in range(3)))
        await writer.drain()
        bodies = []
        async with asyncio.timeout(5):
            for _ in range(3):
                await reader.readuntil(b"\r\n\r\n")
                bodies.append(await reader.readexactly(2))
        assert bodies == [b"/0", b"/1", b"/2"]
        writer.close()
