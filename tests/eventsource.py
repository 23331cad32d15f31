"""An EventSource-like client for tests: reconnects the way a browser does.

``tests.sse.StreamReader`` reads one response (both parse with ``tests.sse.SSEParser``).
A browser's EventSource does more: it keeps the id of the last dispatched frame (also of
an id-only frame, which dispatches no event:
WHATWG §9.2.6 sets the last event id before it looks at the data), and when a 200 stream
ends cleanly, or the connection fails, it waits the last ``retry:`` and reconnects with
``Last-Event-ID``. This client does the same in a thread, and records every connection:
when it opened and ended, how it ended (a clean end of the response, or an error such as a
reset or a truncated chunked body), and the response's resume header.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from tests.sse import SSEParser


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None
    at: float  # time.monotonic() when it was parsed
    connection: int  # index into EventSourceClient.connections


@dataclass
class Connection:
    opened: float
    last_event_id: str | None  # what this request sent
    status: int | None = None
    resumed_from: str | None = None
    ended: float | None = None
    end: str | None = None  # "eof" (clean end of the response), "error", "closed" (by us)
    error: str | None = None
    events: int = 0


@dataclass
class EventSourceClient:
    url: str
    headers: dict[str, str]
    verify: ssl.SSLContext | bool = True
    retry_ms: int = 3000
    reconnect: bool = True
    events: list[Event] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    last_id: str | None = None
    id_updates: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> EventSourceClient:
        self._thread.start()
        return self

    # --- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        with httpx.Client(verify=self.verify, timeout=httpx.Timeout(10.0, read=None)) as http:
            while not self._stop.is_set():
                self._connect_once(http)
                if not self.reconnect or self._stop.wait(self.retry_ms / 1000):
                    return

    def _connect_once(self, http: httpx.Client) -> None:
        headers = dict(self.headers)
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        conn = Connection(opened=time.monotonic(), last_event_id=self.last_id)
        with self._cond:
            self.connections.append(conn)
            index = len(self.connections) - 1
        try:
            with http.stream("GET", self.url, headers=headers) as response:
                self._response = response
                with self._cond:
                    conn.status = response.status_code
                    conn.resumed_from = response.headers.get("taskstream-resumed-from")
                    self._cond.notify_all()
                if response.status_code != 200:
                    response.read()
                    self._ended(conn, "eof")
                    return
                # A new response starts with empty data and type; the id carries over.
                parser = SSEParser(self.last_id)
                for line in self._lines(response):
                    self._feed(parser, line, index, conn)
            self._ended(conn, "closed" if self._stop.is_set() else "eof")
        except Exception as exc:
            if self._stop.is_set():
                self._ended(conn, "closed")
            else:
                self._ended(conn, "error", f"{type(exc).__name__}: {exc}")
        finally:
            self._response = None

    def _lines(self, response: httpx.Response) -> Iterator[str]:
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            yield line

    def _ended(self, conn: Connection, how: str, error: str | None = None) -> None:
        with self._cond:
            conn.ended, conn.end, conn.error = time.monotonic(), how, error
            self._cond.notify_all()

    def _feed(self, parser: SSEParser, line: str, index: int, conn: Connection) -> None:
        item = parser.feed(line)
        if isinstance(item, int):
            self.retry_ms = item
            return
        if line != "":
            return
        now = time.monotonic()
        with self._cond:
            if parser.last_id is not None and parser.last_id != self.last_id:
                self.last_id = parser.last_id
                self.id_updates.append((now, parser.last_id))
            if item is not None:
                self.events.append(Event(item.event, item.data, item.id, now, index))
                conn.events += 1
            self._cond.notify_all()

    # --- for tests -------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[EventSourceClient], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"condition not met after {timeout}s: {len(self.events)} events, "
                        f"connections {self.connections[-3:]}, last events "
                        f"{[(e.event, e.data[:80]) for e in self.events[-3:]]}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def snapshot(self) -> list[Event]:
        with self._cond:
            return list(self.events)

    def stop(self) -> None:
        """Ask the thread to end (it does at the next line or the end of the response)."""
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)

    def close(self) -> None:
        self.stop()
        self.join()
