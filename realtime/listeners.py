"""The server's listening sockets: several per address (``SO_REUSEPORT``), for bursts.

uvicorn runs on uvloop, whose libuv accepts one connection per listening socket per turn of
the event loop (libuv 1.45 stopped accepting in a loop: libuv/libuv#3696). In a reconnect
storm (#9, M5) a turn of the loop runs hundreds of stream opens, so the connections still
waiting in the kernel's queue were taken one per such turn: after the first few hundred,
the rest came in one at a time, each then opened on its own instead of with the others
(their hot-store reads shared no script call, realtime/store_open.py). With ``LISTENERS``
sockets bound to the same address the kernel spreads new connections over them, and each
turn of the loop accepts one from every socket that has one waiting.

``SO_REUSEPORT`` would also let another process of the same user bind the port and take a
share of its connections silently; so the address is first bound plainly, which fails as
uvicorn's own bind would when something else is listening there.
"""

from __future__ import annotations

import contextlib
import socket

LISTENERS = 16


def bind_listeners(
    host: str, port: int, backlog: int, count: int = LISTENERS
) -> list[socket.socket]:
    """``count`` listening sockets per address of ``host`` (port 0: one free port for all)."""
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    try:
        seen: set[tuple[int, object]] = set()
        for family, kind, proto, _, address in addresses:
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            bound = address[1]
            _check_free(family, (address[0], bound, *address[2:]))
            for _ in range(count):
                sock = socket.socket(family, kind, proto)
                listeners.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], bound, *address[2:]))
                bound = sock.getsockname()[1]  # port 0: the others join the first's port
                sock.listen(backlog)
                sock.setblocking(False)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


def _check_free(family: int, address: tuple[object, ...]) -> None:
    """Raise ``OSError`` (address in use) if anything listens on ``address`` already."""
    if address[1] == 0:
        return
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(address)
