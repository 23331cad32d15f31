"""A Redis restart under a running app node (#10): stale pooled connections are retried, so
stream opens right after it succeed instead of failing with "Exception in ASGI application".

The node reaches Redis through a TcpProxy; dropping every proxied connection (with a reset,
as a restarted Redis answers a write on an old connection) is a Redis restart as the node
sees it, without restarting the shared Redis that other tests use."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import Proc
from tests.nodes import open_stream, start_node
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.services


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[str, TcpProxy, Proc]]:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("needs REDIS_URL (make test starts Redis)")
    target = urlsplit(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        REDIS_URL=f"redis://127.0.0.1:{proxy.port}{target.path}",
        TASKSTREAM_REDIS_PREFIX=f"ts-test-redis-{uuid.uuid4().hex[:8]}",
        TASKSTREAM_SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        TASKSTREAM_MAX_STREAMS_PER_USER="50",
        DJANGO_SECRET_KEY="test-only-secret-key-not-for-production-0123456789",
        PYTHONUNBUFFERED="1",
    )
    proc, base = start_node(env, tmp_path)
    yield base, proxy, proc
    proc.stop()
    proxy.close()


def open_and_close(base: str, user_id: int) -> int | None:
    reader = open_stream(base, user_id)
    try:
        reader.wait_for(lambda r: r.ended or any(e.event == "stream-open" for e in r.events), 20)
        return reader.status
    finally:
        reader.close()


def test_stream_opens_right_after_a_redis_restart_succeed(
    node: tuple[str, TcpProxy, Proc],
) -> None:
    base, proxy, proc = node
    # Warm the pools: the lease, the throttle and the hub's group join each hold connections.
    assert [open_and_close(base, 1000 + n) for n in range(20)] == [200] * 20
    proxy.reset()  # Redis "restarted": every pooled connection is now dead
    statuses = [open_and_close(base, 2000 + n) for n in range(40)]
    assert statuses == [200] * 40, statuses
    assert "Exception in ASGI application" not in proc.log()


def test_a_stream_opened_while_redis_is_down_is_told_to_retry_not_a_500(
    node: tuple[str, TcpProxy, Proc],
) -> None:
    base, proxy, proc = node
    assert open_and_close(base, 3000) == 200
    proxy.cut()  # Redis down: connections dropped, new ones refused
    try:
        reader = open_stream(base, 3001)
        reader.wait_for(lambda r: r.ended, 20)
        # A 200 that ends at once with a retry hint: EventSource comes back by itself.
        assert reader.status == 200
        assert not any(e.event == "stream-open" for e in reader.events)
        reader.close()
    finally:
        proxy.restore()
    assert open_and_close(base, 3002) == 200
    assert "Exception in ASGI application" not in proc.log()
