"""Hostile connections (#10): half-sent requests are cut by deadline, the stream answers an
unauthenticated request from its headers without waiting for a body, and /metrics is not
for everyone. Against a real `manage.py serve` (uvicorn), with raw sockets."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, override_settings

from tests.nodes import start_node

HEADER_SECONDS = 1.0
BODY_SECONDS = 4.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(
        DJANGO_SECRET_KEY="test-only-secret-key-not-for-production-0123456789",
        DJANGO_DEBUG="false",
        TASKSTREAM_SQLITE_PATH=str(tmp / "db.sqlite3"),
        TASKSTREAM_HEADER_TIMEOUT_SECONDS=str(HEADER_SECONDS),
        TASKSTREAM_BODY_TIMEOUT_SECONDS=str(BODY_SECONDS),
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
