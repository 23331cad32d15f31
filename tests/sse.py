"""A small Server-Sent Events client for tests: WHATWG parsing, one thread per stream."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str
    id: str | None


class SSEParser:
    """The WHATWG §9.2.6 interpretation of decoded lines, one line at a time.

    ``feed`` returns what the line produces: an ``SSEEvent`` when a blank line dispatches
    data, an ``int`` for a valid ``retry:``, else None. ``last_id`` is the page's
    ``lastEventId``: set at dispatch, also by an id-only frame (which dispatches no event),
    and carried over to a new connection by passing it in.
    """

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        self._id_buffer = last_id
        self._data: list[str] = []
        self._type = ""

    def feed(self, line: str) -> SSEEvent | int | None:
        if line == "":
            self.last_id = self._id_buffer
            event = None
            if self._data:
                event = SSEEvent(self._type or "message", "\n".join(self._data), self.last_id)
            self._data, self._type = [], ""
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self._id_buffer = value
        elif name == "retry" and value.isdigit():
            return int(value)
        return None


def parse_stream(lines: Iterable[str]) -> Iterator[SSEEvent | int]:
    """Parse decoded lines into events (and ``retry`` values as ints)."""
    parser = SSEParser()
    for line in lines:
        item = parser.feed(line)
        if item is not None:
            yield item


class StreamReader:
    """Reads one SSE stream in a background thread; tests wait on what it collected."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.events: list[SSEEvent] = []
        self.status: int | None = None
        self.response_headers: httpx.Headers | None = None
        self.body: bytes = b""
        self.ended = False
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._response: httpx.Response | None = None

    def start(self) -> StreamReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(5.0, read=None)) as client,
                client.stream("GET", self.url, headers=self.headers) as response,
            ):
                self._response = response
                with self._cond:
                    self.status = response.status_code
                    self.response_headers = response.headers
                    self._cond.notify_all()
                if response.status_code != 200:
                    self.body = response.read()
                    return
                for item in parse_stream(self._lines(response)):
                    if isinstance(item, SSEEvent):
                        with self._cond:
                            self.events.append(item)
                            self._cond.notify_all()
        except BaseException as exc:  # reported to the test through wait_for
            if not self._stop.is_set():
                self.error = exc
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def _lines(self, response: httpx.Response) -> Iterator[str]:
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            yield line

    def wait_for(self, predicate: Callable[[StreamReader], bool], timeout: float = 30.0) -> None:
        """Block until ``predicate(self)`` holds; fail with what was seen after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.ended and not predicate(self)):
                    raise AssertionError(
                        f"stream condition not met (status={self.status}, ended={self.ended}, "
                        f"error={self.error!r}); {len(self.events)} events, the last ones: "
                        f"{[(e.event, e.id, e.data[:60]) for e in self.events[-3:]]}"
                    )
                self._cond.wait(remaining)

    def of_type(self, prefix: str) -> list[SSEEvent]:
        with self._cond:
            return [e for e in self.events if e.event.startswith(prefix)]

    def close(self) -> None:
        """Drop the connection (as a browser tab closing would) and wait for the thread.

        Closing an httpx response from another thread does not interrupt a blocked read,
        so the socket itself is shut down first."""
        self._stop.set()
        if self._response is not None:
            stream = self._response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns a truthy value (for state outside a stream)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
