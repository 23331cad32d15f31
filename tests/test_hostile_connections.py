"""Hostile connections (#10): half-sent requests are cut by deadline, the stream answers an
unauthenticated request from its headers without waiting for a body, a client that
vanishes without a FIN is cut by the send timeout, and /metrics is not for everyone.
Against a real `manage.py serve` (uvicorn), with raw sockets."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.test import Client, override_settings
from rest_framework_simplejwt.tokens import AccessToken

from tests.nodes import start_node
from tests.sse import wait_until
from tests.tcp_proxy import TcpProxy

HEADER_SECONDS = 1.0
BODY_SECONDS = 4.0
SEND_TIMEOUT = 2.0
HEARTBEAT = 0.2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(
        DJANGO_SECRET_KEY=settings.SECRET_KEY,  # the tests sign stream tokens with it
        DJANGO_DEBUG="false",
        TASKSTREAM_SQLITE_PATH=str(tmp / "db.sqlite3"),
        TASKSTREAM_HEADER_TIMEOUT_SECONDS=str(HEADER_SECONDS),
        TASKSTREAM_BODY_TIMEOUT_SECONDS=str(BODY_SECONDS),
        TASKSTREAM_SEND_TIMEOUT_SECONDS=str(SEND_TIMEOUT),
        TASKSTREAM_HEARTBEAT_SECONDS=str(HEARTBEAT),
        PYTHONUNBUFFERED="1",
    )
    proc, base = start_node(env, tmp)
    port = int(base.rsplit(":", 1)[1])
    yield port
    proc.stop()


def closed_within(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """Read until the server closes the connection; what it sent, and when it closed."""
    started = time.monotonic()
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {seconds}s; received {received!r}") from None
    return received, time.monotonic() - started


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_half_sent_headers_are_cut_at_the_header_deadline(server: int) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: te")
        received, after = closed_within(sock, HEADER_SECONDS + 5)
    assert received == b""
    assert after < HEADER_SECONDS + 2


def test_a_connection_that_sends_nothing_is_cut_at_the_header_deadline(server: int) -> None:
    with connect(server) as sock:
        _, after = closed_within(sock, HEADER_SECONDS + 5)
    assert after < HEADER_SECONDS + 2


def test_an_unauthenticated_stream_with_an_announced_body_gets_401_at_once(server: int) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        sock.settimeout(BODY_SECONDS - 1)
        try:
            head = sock.recv(4096)
        except TimeoutError:
            raise AssertionError("no answer before the body deadline") from None
    assert head.startswith(b"HTTP/1.1 401"), head[:200]


def test_a_body_that_never_comes_is_cut_at_the_body_deadline(server: int) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /api/v1/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"user'
        )
        received, after = closed_within(sock, BODY_SECONDS + 5)
    assert after < BODY_SECONDS + 2, (after, received[:200])


def test_a_quiet_stream_whose_client_vanished_is_freed_within_the_send_timeout(
    server: int,
) -> None:
    """A client gone without a FIN (here: a proxy that stops forwarding, its window shut
    after 1 KiB) on a stream that carries only heartbeats. The heartbeats would take minutes
    to fill the buffers that make a write block; the kernel's TCP_USER_TIMEOUT (twice the
    send timeout, realtime/server.py) aborts the connection once a heartbeat goes
    unacknowledged that long, and the node frees the stream."""
    token = AccessToken()
    token["user_id"] = 424242  # stream auth is stateless: no user row needed
    metrics = f"http://127.0.0.1:{server}/metrics"
    baseline = open_streams(metrics)
    proxy = TcpProxy("127.0.0.1", server, upstream_rcvbuf=1024)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(
                f"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
            head = sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
            wait_until(lambda: open_streams(metrics) == baseline + 1, 10, "the stream open")
            proxy.freeze()  # from now on nothing is forwarded, nothing is closed
            vanished = time.monotonic()
            # Bound: a few heartbeats to fill 1 KiB, twice the send timeout, then clean-up.
            wait_until(lambda: open_streams(metrics) == baseline, 30, "the stream freed")
            freed_after = time.monotonic() - vanished
    finally:
        proxy.close()
    assert freed_after < 20, freed_after


def open_streams(metrics_url: str) -> float:
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith("taskstream_streams_open "):
            return float(line.split()[1])
    return 0.0


def test_metrics_answer_loopback_only_by_default() -> None:
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="203.0.113.7").get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 403


def test_a_configured_network_or_token_may_read_metrics() -> None:
    taskstream = {
        **settings.TASKSTREAM,
        "METRICS_ALLOW": ("10.0.0.0/8",),
        "METRICS_TOKEN": "s3cret-scrape-token",
    }
    with override_settings(TASKSTREAM=taskstream):
        assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
        assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403
        stranger = Client(REMOTE_ADDR="203.0.113.7")
        assert stranger.get("/metrics").status_code == 403
        bearer = "Bearer s3cret-scrape-token"
        assert stranger.get("/metrics", HTTP_AUTHORIZATION=bearer).status_code == 200
        assert stranger.get("/metrics", HTTP_AUTHORIZATION="Bearer guess").status_code == 403
