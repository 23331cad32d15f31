"""A TCP forwarder a test can cut: a dependency's outage, seen from one process only.

Pointing one process (``consume_events``) at the proxy instead of PostgreSQL lets a test
make PostgreSQL unreachable for that process alone, the way a network partition or a
database restart looks to it, while the test's own connections stay up.

Each connection's two sockets are closed only once both of its forwarding threads have
left ``recv``: closing a socket another thread is blocked on would free its descriptor
number for the next connection, and the blocked thread would then read that connection's
bytes (a stolen PostgreSQL reply, a session that never ends).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Connection:
    client: socket.socket
    upstream: socket.socket
    reset: bool = False  # closed with a TCP reset, not a FIN
    threads: int = 2  # forwarding threads still running; the last one closes both sockets
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sockets(self) -> tuple[socket.socket, socket.socket]:
        return self.client, self.upstream


class TcpProxy:
    def __init__(
        self, target_host: str, target_port: int, *, upstream_rcvbuf: int | None = None
    ) -> None:
        self.target = (target_host, target_port)
        # A small receive buffer towards the server: once the proxy stops reading (``freeze``)
        # the server's writes stall after a few KiB, as towards a client that vanished.
        self.upstream_rcvbuf = upstream_rcvbuf
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self.flowing = threading.Event()  # cleared: bytes stop moving (a frozen server)
        self.flowing.set()
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Drop every connection and refuse new ones until ``restore``."""
        self._up.clear()
        for conn in self._take_all():
            for sock in conn.sockets():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._up.set()

    def reset(self) -> None:
        """Drop every connection with a TCP reset (what a restarted server answers on an
        old connection); new ones are still accepted unless ``cut`` too."""
        for conn in self._take_all():
            conn.reset = True
            for sock in conn.sockets():
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)  # wakes the threads; sends nothing yet

    def freeze(self) -> None:
        """Connections stay open but nothing moves (SIGSTOP of the server) until ``thaw``."""
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.thaw()  # threads held by ``freeze`` go on, fail on the cut sockets, and close
        self._listener.close()

    def _take_all(self) -> list[_Connection]:
        with self._lock:
            taken = list(self._connections)
            self._connections.clear()
        return taken

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()  # refused: what a client sees of a server that is down
                continue
            try:
                upstream = self._connect()
            except OSError:
                client.close()
                continue
            conn = _Connection(client, upstream)
            with self._lock:
                self._connections.add(conn)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(conn, a, b), daemon=True).start()

    def _connect(self) -> socket.socket:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if self.upstream_rcvbuf is not None:
                upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.upstream_rcvbuf)
            upstream.settimeout(5)  # connecting only: an idle connection stays open
            upstream.connect(self.target)
            upstream.settimeout(None)
        except OSError:
            upstream.close()
            raise
        return upstream

    def _pipe(self, conn: _Connection, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            if not conn.reset:
                # One side ended: end both, which also wakes the other direction's thread.
                for sock in conn.sockets():
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            else:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_RD)
            with conn.lock:
                conn.threads -= 1
                last = conn.threads == 0
            if last:
                with self._lock:
                    self._connections.discard(conn)
                for sock in conn.sockets():
                    sock.close()  # with SO_LINGER 0 after ``reset``: a TCP reset
