"""The server's listening sockets (realtime.listeners): a burst of connections is accepted
several per turn of uvloop's loop, and an address in use is still refused."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
import uvloop

from realtime.listeners import LISTENERS, bind_listeners

BURST = 64


def test_the_listeners_share_one_port() -> None:
    sockets = bind_listeners("127.0.0.1", 0, 16)
    try:
        assert len(sockets) == LISTENERS
        assert len({s.getsockname() for s in sockets}) == 1
    finally:
        for sock in sockets:
            sock.close()


def test_a_burst_is_accepted_several_connections_per_turn_of_the_loop() -> None:
    """uvloop accepts one connection per listening socket per turn of the loop: with one
    socket, a reconnect storm's connections waited one turn each (#9, M5)."""

    async def turns_to_accept(sockets: list[socket.socket]) -> int:
        loop = asyncio.get_running_loop()
        turn = 0
        accepted_in: list[int] = []

        class Accepted(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted_in.append(turn)

        servers = [await loop.create_server(Accepted, sock=sock) for sock in sockets]
        port = sockets[0].getsockname()[1]
        # Connected before the loop turns again: all of them wait in the kernel's queues.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]
        try:
            async with asyncio.timeout(10):
                while len(accepted_in) < BURST:
                    turn += 1
                    await asyncio.sleep(0)
        finally:
            for client in clients:
                client.close()
            for server in servers:
                server.close()
        return len(set(accepted_in))

    assert uvloop.run(turns_to_accept(bind_listeners("127.0.0.1", 0, 128))) <= BURST // 2


def test_an_address_in_use_is_refused() -> None:
    """SO_REUSEPORT must not let a second server share a port silently."""
    with contextlib.closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError):
            bind_listeners("127.0.0.1", taken.getsockname()[1], 16)
    first = bind_listeners("127.0.0.1", 0, 16)
    try:
        with pytest.raises(OSError):
            bind_listeners("127.0.0.1", first[0].getsockname()[1], 16)
    finally:
        for sock in first:
            sock.close()
