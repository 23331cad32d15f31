"""`make run` mode: one process, no external service, reads one event from its stream."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from realtime.embedded import DEMO_PASSWORD, DEMO_USER
from tests.conftest import Proc, free_port
from tests.sse import StreamReader


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"}
        and not k.startswith("TASKSTREAM_")
    }
    env.update(
        DJANGO_DEBUG="true",
        TASKSTREAM_SQLITE_PATH=str(tmp_path / "embedded.sqlite3"),
        PYTHONUNBUFFERED="1",
    )
    proc = Proc("run_embedded", ["manage.py", "run_embedded", "--port", str(port)], env, tmp_path)
    proc.start()
    base = f"http://127.0.0.1:{port}"
    try:
        proc.wait_log("Taskstream is running at", timeout=60)
        yield base
    finally:
        # Ctrl-C is how a person stops `make run`.
        assert proc.stop(sig=signal.SIGINT) == 0, proc.log()[-3000:]
        assert "Taskstream stopped." in proc.log()


def test_the_embedded_mode_streams_a_demo_task(embedded: str) -> None:
    tokens = httpx.post(
        f"{embedded}/api/v1/auth/token/", json={"username": DEMO_USER, "password": DEMO_PASSWORD}
    ).json()
    auth = {"Authorization": f"Bearer {tokens['access']}"}
    # The browser path: the access token goes into the HttpOnly cookie EventSource sends.
    cookie = httpx.post(f"{embedded}/api/v1/auth/cookie/", headers=auth)
    assert cookie.status_code == 200
    set_cookie = cookie.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "Path=/api/v1/events/" in set_cookie
    name, value = set_cookie.split(";", 1)[0].split("=", 1)

    stream = StreamReader(f"{embedded}/api/v1/events/stream", {"Cookie": f"{name}={value}"})
    stream.start()
    try:
        stream.wait_for(lambda r: any(e.event == "stream-open" for e in r.events), 30)
        created = httpx.post(
            f"{embedded}/api/v1/tasks/",
            json={"kind": "demo", "params": {"steps": 2, "step_ms": 10}},
            headers=auth,
        ).json()
        stream.wait_for(lambda r: any(e.event == "task.succeeded" for e in r.events), 60)
        events = stream.of_type("task.")
        assert {json.loads(e.data)["task_id"] for e in events} == {created["id"]}
        assert events[0].event == "task.started"
        assert all(e.id and e.id.startswith("task.events:") for e in events)
    finally:
        stream.close()
    page = httpx.get(f"{embedded}/")
    assert (
        page.status_code == 200
        and "EventSource" in httpx.get(f"{embedded}/static/taskstream/client.js").text
    )
