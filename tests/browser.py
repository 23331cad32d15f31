"""Browser acceptance helpers: headless Chromium (Debian's, via Selenium), a recording wire
proxy that shows what the browser really sent and what the server really answered, a tiny
static page server for a second origin, and the in-page EventSource harness."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from tests.conftest import Proc, free_port
from tests.sse import StreamReader, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium (own profile, so no cookie survives between tests)."""
    with tempfile.TemporaryDirectory(prefix="taskstream-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            driver.set_script_timeout(20)
            yield driver
        finally:
            driver.quit()


def wait_js(driver: webdriver.Chrome, expression: str, timeout: float, what: str) -> Any:
    """Wait until the JS ``expression`` is truthy in the page; return its value."""
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script(f"return ({expression});"),
        message=f"browser: {what} within {timeout} s",
    )


# --- the server under test ------------------------------------------------------------


@contextmanager
def own_server(
    env: dict[str, str], log_dir: Path, name: str, **settings: str
) -> Iterator[tuple[Proc, str]]:
    """``manage.py serve`` on its own port with extra settings; the shared stack (and its
    consume_events, which feeds every server through the Redis layer) is untouched."""
    port = free_port()
    server = Proc(
        name,
        ["manage.py", "serve", "--port", str(port)],
        {**env, "TASKSTREAM_DRAIN_SECONDS": "0", **settings},
        log_dir,
    ).start()
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert server.popen is not None
        if server.popen.poll() is not None:
            raise AssertionError(f"{name} exited early:\n{server.log()[-3000:]}")
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, 60, f"{name} to answer /healthz")
        yield server, base
    finally:
        server.stop()


def e2e_user(django_user_model: type[User], name: str) -> dict[str, str]:
    """A user the servers under test can log in (username ``e2e-{name}``)."""
    password = f"{name}-password"
    # The servers under test check this hash: a cheap PBKDF2 (its iteration count is in the
    # hash, so they accept it) instead of the tests' MD5, which they do not know.
    hasher = PBKDF2PasswordHasher()
    user = django_user_model(username=f"e2e-{name}")
    user.password = hasher.encode(password, hasher.salt(), iterations=1000)
    user.save()
    return {"username": user.username, "password": password}


# --- a recording proxy ----------------------------------------------------------------


@dataclass
class Exchange:
    """One HTTP request seen on the wire, and the head of the response to it."""

    connection: int
    method: str
    target: str
    headers: dict[str, str]
    sent_at: float  # time.time() when the request head arrived
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    answered_at: float | None = None
    ended_at: float | None = None  # the response's last byte went to the browser

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class _Http1Parser:
    """Incremental HTTP/1.1 message framing (heads, Content-Length and chunked bodies)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.body_left = 0  # bytes of a Content-Length body still to skip
        self.chunked = False
        self.chunk_left = -1  # -1: expecting a chunk-size line
        self.in_trailer = False

    def feed(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        """Yield ("head", raw head) and ("end", b"") events for complete messages."""
        self.buffer += data
        while True:
            if self.body_left:
                taken = min(self.body_left, len(self.buffer))
                self.buffer = self.buffer[taken:]
                self.body_left -= taken
                if self.body_left:
                    return
                yield "end", b""
                continue
            if self.chunked:
                if not self._chunks():
                    return
                self.chunked = False
                yield "end", b""
                continue
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head, self.buffer = self.buffer[:head_end], self.buffer[head_end + 4 :]
            yield "head", head

    def framing(self, headers: dict[str, str], no_body: bool) -> bool:
        """Set up the body that follows a head; True if the message already ended."""
        if no_body:
            return True
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.chunked, self.chunk_left, self.in_trailer = True, -1, False
            return False
        self.body_left = int(headers.get("content-length", "0") or 0)
        return self.body_left == 0

    def _chunks(self) -> bool:
        """Consume chunked body bytes; True once the terminating chunk and trailer are in."""
        while True:
            if self.in_trailer:
                line_end = self.buffer.find(b"\r\n")
                if line_end < 0:
                    return False
                line, self.buffer = self.buffer[:line_end], self.buffer[line_end + 2 :]
                if not line:
                    return True
                continue
            if self.chunk_left < 0:
                line_end = self.buffer.find(b"\r\n")
                if line_end < 0:
                    return False
                size = int(self.buffer[:line_end].split(b";")[0], 16)
                self.buffer = self.buffer[line_end + 2 :]
                if size == 0:
                    self.in_trailer = True
                    continue
                self.chunk_left = size + 2  # the data and its CRLF
            taken = min(self.chunk_left, len(self.buffer))
            self.buffer = self.buffer[taken:]
            self.chunk_left -= taken
            if self.chunk_left:
                return False
            self.chunk_left = -1


def _parse_head(raw: bytes) -> tuple[str, dict[str, str]]:
    first, *lines = raw.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return first, headers


class WireProxy:
    """A TCP proxy in front of the server that records every request and response head.

    The bytes pass through unchanged, so the browser talks to the real server; the log is
    what the server received (e.g. the reconnect's ``Last-Event-ID``) and answered."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.closed = False
        self.errors: list[str] = []
        self._connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self._connections += 1
                number = self._connections
                self.sockets += [client, upstream]
            pending: list[Exchange] = []
            threading.Thread(
                target=self._pump, args=(client, upstream, number, pending, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, number, pending, False), daemon=True
            ).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        number: int,
        pending: list[Exchange],
        from_browser: bool,
    ) -> None:
        parser = _Http1Parser()
        answering: Exchange | None = None
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                now = time.time()
                try:
                    for kind, raw in parser.feed(data):
                        if kind == "head" and from_browser:
                            first, headers = _parse_head(raw)
                            method, target, _ = first.split(" ", 2)
                            exchange = Exchange(number, method, target, headers, now)
                            with self.lock:
                                self.exchanges.append(exchange)
                                pending.append(exchange)
                            parser.framing(headers, no_body=False)
                        elif kind == "head":
                            first, headers = _parse_head(raw)
                            status = int(first.split(" ", 2)[1])
                            with self.lock:
                                answering = pending.pop(0) if pending else None
                            if answering is not None:
                                answering.status = status
                                answering.response_headers = headers
                                answering.answered_at = now
                            no_body = status in (204, 304) or (
                                answering is not None and answering.method == "HEAD"
                            )
                            if parser.framing(headers, no_body) and answering is not None:
                                answering.ended_at = now
                        elif kind == "end" and not from_browser and answering is not None:
                            answering.ended_at = now
                except Exception as exc:  # the log is best effort; the bytes still flow
                    self.errors.append(repr(exc))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def requests(self, path: str, method: str = "GET") -> list[Exchange]:
        with self.lock:
            return [e for e in self.exchanges if e.path == path and e.method == method]

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with suppress(OSError):
                    sock.close()


# --- a second origin ------------------------------------------------------------------

BLANK_PAGE = b"<!doctype html><meta charset=utf-8><title>other origin</title><p>page B</p>"


class _BlankPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(BLANK_PAGE)))
        self.end_headers()
        self.wfile.write(BLANK_PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def page_server() -> Iterator[int]:
    """A static page on 127.0.0.1:<port> in a thread: another origin than the app's."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BlankPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


# --- the in-page EventSource harness --------------------------------------------------

HARNESS = """
window.ts = window.ts || {events: [], errors: [], opens: [], sources: []};
window.tsOpen = function (url, withCredentials) {
  const source = new EventSource(url, {withCredentials: withCredentials});
  const index = ts.sources.length;
  ts.sources.push(source);
  const record = (e) => {
    const body = JSON.parse(e.data);
    ts.events.push({
      source: index, type: e.type, id: e.lastEventId, t: performance.now(),
      seq: body.data && body.data.message !== undefined ? Number(body.data.message) : null,
    });
  };
  for (const type of ["stream-open", "stream-reset", "task.progress"]) {
    source.addEventListener(type, record);
  }
  source.onopen = () => ts.opens.push({source: index, t: performance.now()});
  source.onerror = () => {
    const last = ts.events.filter((e) => e.source === index && e.id);
    ts.errors.push({
      source: index, t: performance.now(), state: source.readyState,
      lastId: last.length ? last[last.length - 1].id : "",
    });
  };
  return index;
};
window.tsSetCookie = function (base, token, credentials, done) {
  fetch(base + "/api/v1/auth/cookie/", {
    method: "POST", credentials: credentials, headers: {authorization: "Bearer " + token},
  }).then(async (r) => done({status: r.status, body: await r.text()}),
          (err) => done({status: 0, body: String(err)}));
};
"""


def install_harness(driver: webdriver.Chrome) -> None:
    driver.execute_script(HARNESS)


def set_cookie(
    driver: webdriver.Chrome, base: str, token: str, credentials: str = "same-origin"
) -> dict[str, Any]:
    """POST /api/v1/auth/cookie/ from the page itself (fetch), as the shipped client does."""
    result: dict[str, Any] = driver.execute_async_script(
        "tsSetCookie(arguments[0], arguments[1], arguments[2], arguments[3]);",
        base,
        token,
        credentials,
    )
    return result


def open_source(driver: webdriver.Chrome, url: str, with_credentials: bool = True) -> int:
    index: int = driver.execute_script(
        "return tsOpen(arguments[0], arguments[1]);", url, with_credentials
    )
    return index


def page_state(driver: webdriver.Chrome) -> dict[str, Any]:
    state: dict[str, Any] = driver.execute_script(
        "return {events: ts.events, errors: ts.errors, opens: ts.opens,"
        " states: ts.sources.map((s) => s.readyState)};"
    )
    return state


def drop(reader: StreamReader) -> None:
    """Close a ``StreamReader`` at once. Its own ``close()`` cannot interrupt the reading
    thread's blocking read on an idle stream (it waits for the next frame or its 10 s join
    timeout); shutting the socket down ends that read immediately."""
    reader._stop.set()
    response = reader._response
    stream = response.extensions.get("network_stream") if response is not None else None
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    reader.close()
