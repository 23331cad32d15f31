"""The HTTP protocol ``manage.py serve`` runs: uvicorn's, with deadlines on reading requests.

uvicorn waits for a request's headers, and for its body, as long as the client likes: a
client that sends half its headers (or nothing), or a Content-Length and then no body,
holds a connection and its buffers for ever, and a few thousand such clients exhaust the
node (slowloris). Here a request's line and headers must arrive within
TASKSTREAM_HEADER_TIMEOUT_SECONDS of the connection (or, on a kept-alive connection, of the
request's first byte), and its body within TASKSTREAM_BODY_TIMEOUT_SECONDS of its headers;
otherwise the connection is closed. Only reading the request is limited: a response being
streamed (an event stream) is not.

Writing is bounded too, by the kernel: every connection gets ``TCP_USER_TIMEOUT`` of twice
TASKSTREAM_SEND_TIMEOUT_SECONDS, so data its peer has not acknowledged for that long (a
client that vanished without a FIN: its packets dropped, or its window shut) aborts the
connection, and the stream ends as for a disconnect. The stream's own send timeout sees a
dead peer only once the kernel's and uvicorn's buffers are full, which a quiet stream's
heartbeats take minutes to fill; this sees it after the next heartbeat. Twice, so that a
client that stops reading a busy stream is still cut by the stream's own timeout first
(and counted as ``slow-client``): the kernel is the backstop for what the stream cannot
see.

Per connection, uvicorn keeps three deques: the pipelined requests' queue and the waiters of
two ``asyncio.Event``s (the request's messages, and write flow control). An empty deque is
624 bytes, all three ~1.8 KiB of an idle stream's ~17 (issue #9, M4); each becomes a list,
56 bytes empty, which serves the same calls (append, remove, iterate; the queue's appendleft
and pop). Pipelined requests and concurrent waits on one connection are rare, so the deque's
O(1) ends buy nothing here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from streaming import conf

logger = logging.getLogger(__name__)


class BoundedHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = conf.get()
        self._header_seconds = settings.HEADER_TIMEOUT_SECONDS
        self._body_seconds = settings.BODY_TIMEOUT_SECONDS
        self._read_deadline: asyncio.TimerHandle | None = None
        self.pipeline = _Pipeline()  # type: ignore[assignment]  # a deque's calls, on a list

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _lean_waiters(self.flow._is_writable_event)
        _abort_unacknowledged_after(transport, 2 * conf.get().SEND_TIMEOUT_SECONDS)
        self._arm(self._header_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_deadline is None:  # a kept-alive connection's next request
            self._arm(self._header_seconds)

    def on_headers_complete(self) -> None:
        self._arm(self._body_seconds)  # disarmed at once when there is no body
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not before:  # the request's new cycle
            _lean_waiters(self.cycle.message_event)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(seconds, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            logger.info("closed a connection from %s: request not received in time", self.client)
            self.transport.close()


def _abort_unacknowledged_after(transport: asyncio.Transport, seconds: float) -> None:
    sock = transport.get_extra_info("socket")
    option = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux; elsewhere the send timeout
    if sock is None or option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(seconds * 1000)))
    except OSError as exc:  # a connection already reset: nothing to bound
        logger.debug("TCP_USER_TIMEOUT not set: %s", exc)


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests (``appendleft``, ``pop``, truth) on a list."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


def _lean_waiters(event: asyncio.Event) -> None:
    """Give a new ``event`` a list for its waiters instead of its deque (``Event`` appends,
    removes and iterates them). Only while none waits: nothing is lost in the swap."""
    if not event._waiters:
        event._waiters = []  # type: ignore[assignment]  # a deque's calls, on a list
