"""A TCP forwarder a test can cut: a dependency's outage, seen from one process only.

Pointing one process (``consume_events``) at the proxy instead of PostgreSQL lets a test
make PostgreSQL unreachable for that process alone, the way a network partition or a
database restart looks to it, while the test's own connections stay up.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


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
        self._sockets: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Drop every connection and refuse new ones until ``restore``."""
        self._up.clear()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._sockets.clear()

    def restore(self) -> None:
        self._up.set()

    def reset(self) -> None:
        """Drop every connection with a TCP reset (what a restarted server answers on an
        old connection); new ones are still accepted unless ``cut`` too."""
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
            self._sockets.clear()

    def freeze(self) -> None:
        """Connections stay open but nothing moves (SIGSTOP of the server) until ``thaw``."""
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

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
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

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

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._sockets.discard(sock)
