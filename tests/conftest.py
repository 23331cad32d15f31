"""Shared fixtures: named users, API clients, and the real process stack for integration."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from streaming import conf
from tests.sse import StreamReader, wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def alice(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password="alice-password")


@pytest.fixture
def bob(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("bob", password="bob-password")


def access_token(user: User) -> str:
    return str(AccessToken.for_user(user))


def api_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(user)}")
    return client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proc:
    """A project process (server or command) started for a test, logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_offset = 0

    def start(self) -> Proc:
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, *self.args], cwd=ROOT, env=self.env, stdout=log, stderr=log
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[self.log_offset :]

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        def seen() -> bool:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            return text in self.log()

        wait_until(seen, timeout, f"{self.name} to log {text!r}")

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process and wait; SIGKILL (exit -9) if it is still alive after
        ``timeout``. Returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait()


class Stack:
    """The real deployment shape: ASGI server, consume_events, worker, outbox relay."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        manage = ["manage.py"]
        self.server = Proc("server", [*manage, "serve", "--port", str(self.port)], env, log_dir)
        self.consumer = Proc("consume_events", [*manage, "consume_events"], env, log_dir)
        self.worker = Proc("run_worker", [*manage, "run_worker"], env, log_dir)
        self.relay = Proc("relay_outbox", [*manage, "relay_outbox"], env, log_dir)

    def start(self) -> None:
        for proc in (self.server, self.consumer, self.worker, self.relay):
            proc.start()
        wait_until(self._server_up, 60, "the ASGI server to answer /healthz")
        self.consumer.wait_log("assigned task.events")
        self.worker.wait_log("assigned task.requests")

    def _server_up(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        for proc in (self.relay, self.worker, self.consumer, self.server):
            proc.stop()


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(
            f"{name} is not set: integration tests need the real services. Run `make test` "
            "(it starts them), or deselect them with -m 'not services'."
        )
    return value


@pytest.fixture(scope="session")
def run_id() -> Iterator[str]:
    """This session's name. Every Kafka topic a test creates holds it in its name, and the
    session deletes them all at its end: a day of test runs had left ~500 topics (1,400
    partition directories) on the developer's broker. A session killed before its end
    leaves its topics behind: harmless to the next session, which makes its own."""
    run = uuid.uuid4().hex[:10]
    yield run
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        from tests.kafka_helpers import delete_topics_named

        try:
            delete_topics_named(run)
        except Exception as exc:  # a broker a test left stopped: say so, fail nothing
            warnings.warn(f"the topics of test session {run} were not deleted: {exc}", stacklevel=2)


@pytest.fixture(scope="session")
def session_names(run_id: str) -> Iterator[dict[str, str]]:
    """Fresh topics for this test session, so earlier runs' records never interfere."""
    _require("KAFKA_BOOTSTRAP_SERVERS")
    topics = {
        "TOPIC_EVENTS": f"task.events.{run_id}",
        "TOPIC_REQUESTS": f"task.requests.{run_id}",
        "TOPIC_DLQ": f"task.events.dlq.{run_id}",
        "CONSUMER_GROUP": f"taskstream-events-{run_id}",
        "WORKER_GROUP": f"taskstream-worker-{run_id}",
        "REDIS_PREFIX": f"ts-test-{run_id}",
    }
    original = dict(settings.TASKSTREAM)
    settings.TASKSTREAM.update(topics)
    conf.reload()
    from streaming.kafka import ensure_topics

    ensure_topics(
        [topics["TOPIC_EVENTS"], topics["TOPIC_REQUESTS"], topics["TOPIC_DLQ"]],
        partitions=3,
    )
    yield topics
    settings.TASKSTREAM.clear()
    settings.TASKSTREAM.update(original)
    conf.reload()


@pytest.fixture(scope="session")
def stack_env(
    session_names: dict[str, str], django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    _require("REDIS_URL")
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise pytest.UsageError("integration tests need DATABASE_URL to point at PostgreSQL")
    env = dict(os.environ)
    env.update({f"TASKSTREAM_{k}": v for k, v in session_names.items()})
    # The subprocesses use the test database pytest-django created.
    env["DATABASE_URL"] = (
        f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    )
    env["DJANGO_SECRET_KEY"] = settings.SECRET_KEY
    env["PYTHONUNBUFFERED"] = "1"
    env["LOG_LEVEL"] = "INFO"
    # Production's logs: one JSON object per line, and one line per consumed record
    # (tests/test_trace_e2e.py reads them).
    env["TASKSTREAM_LOG_FORMAT"] = "json"
    env["TASKSTREAM_LOG_RECORDS"] = "true"
    # Kinds the relay hands to Celery and RQ, each on a Redis database and a queue of this
    # session (the ``workers`` fixture starts their workers).
    env.update(worker_brokers(env["REDIS_URL"], session_names["REDIS_PREFIX"]))
    return env


WORKER_ROUTES = (
    "count-celery=celery:tests.worker_apps.count,count-rq=rq:tests.worker_apps.count_job"
)


def worker_brokers(redis_url: str, prefix: str) -> dict[str, str]:
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    return {
        "TASKSTREAM_TASK_ROUTES": WORKER_ROUTES,
        "TASKSTREAM_CELERY_BROKER_URL": f"{base}/13",
        "TASKSTREAM_CELERY_QUEUE": f"{prefix}-celery",
        "TASKSTREAM_RQ_REDIS_URL": f"{base}/14",
        "TASKSTREAM_RQ_QUEUE": f"{prefix}-rq",
    }


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("stack-logs")
    running = Stack(stack_env, log_dir)
    running.start()
    yield running
    running.stop()


def worker_procs(env: dict[str, str], run_id: str, log_dir: Path) -> list[Proc]:
    """A Celery worker and an RQ worker on the session's brokers (``stack_env``), with what a
    worker machine has: Kafka and the broker, no Django settings or database."""
    bare = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONUNBUFFERED": "1",
        **{k: v for k, v in env.items() if k.startswith(("KAFKA_", "TASKSTREAM_"))},
    }
    celery = Proc(
        "celery",
        [
            *("-m", "celery", "-A", "tests.worker_apps", "worker"),
            *("-Q", env["TASKSTREAM_CELERY_QUEUE"], "--pool", "prefork", "--concurrency", "2"),
            *("--loglevel", "INFO", "--hostname", f"ts-{run_id}@%h"),
            *("--without-gossip", "--without-mingle"),
        ],
        bare,
        log_dir,
    )
    rq = Proc(
        "rq",
        [
            *("-m", "rq.cli", "worker", "--url", env["TASKSTREAM_RQ_REDIS_URL"]),
            *("--name", f"ts-rq-{run_id}", env["TASKSTREAM_RQ_QUEUE"]),
        ],
        bare,
        log_dir,
    )
    return [celery, rq]


@pytest.fixture(scope="session")
def workers(
    stack: Stack,
    stack_env: dict[str, str],
    run_id: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The session's stack (whose relay routes the ``count-*`` kinds), plus a Celery worker and
    an RQ worker (tests/worker_apps.py), started once for the modules that use them
    (tests/test_workers_*.py); every test there waits for its tasks to end, so each finds the
    workers idle."""
    celery, rq = worker_procs(stack_env, run_id, tmp_path_factory.mktemp("workers-logs"))
    celery.start()
    rq.start()
    try:
        celery.wait_log(" ready.")
        rq.wait_log("Listening on")
        yield stack
    finally:
        rq.stop()
        celery.stop()


def task_api(stack: Stack, user: User, method: str, path: str, body: Any = None) -> httpx.Response:
    """``/api/v1/tasks/{path}`` of ``stack`` as ``user`` (a bearer token)."""
    return httpx.request(
        method,
        f"{stack.base}/api/v1/tasks/{path}",
        json=body,
        headers={"Authorization": f"Bearer {access_token(user)}"},
        timeout=10,
    )


def start_task(stack: Stack, user: User, kind: str, params: dict[str, Any]) -> str:
    """``POST /api/v1/tasks/``; the new task's id."""
    response = task_api(stack, user, "POST", "", {"kind": kind, "params": params})
    assert response.status_code == 201, response.text
    task_id: str = response.json()["id"]
    return task_id


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings: Any) -> None:
    # PBKDF2's deliberate slowness costs seconds per created user; tests need none of it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _own_cache(settings: Any) -> None:
    # The throttles count in the default cache. A cache of its own per test keeps one
    # test's login attempts from throttling the next one's, and a test's cache.clear()
    # from flushing the Redis database the running stack's hot store and layer live in.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"test-{uuid.uuid4().hex}",
        }
    }


def open_stream(
    stack: Stack | str, user: User, cursor: str | None = None, query: str = ""
) -> StreamReader:
    """A stream of ``user`` on ``stack`` (or a server's base URL), once it has said
    ``stream-open`` (or ended: a refusal's status and body are then on the reader)."""
    headers = {"Authorization": f"Bearer {access_token(user)}"}
    if cursor is not None:
        headers["Last-Event-ID"] = cursor
    base = stack if isinstance(stack, str) else stack.base
    reader = StreamReader(f"{base}/api/v1/events/stream{query}", headers).start()
    reader.wait_for(lambda r: r.ended or any(e.event == "stream-open" for e in r.events), 20)
    return reader


@pytest.fixture
def streams() -> Iterator[list[StreamReader]]:
    """Readers a test opens; each is closed after the test."""
    opened: list[StreamReader] = []
    yield opened
    for reader in opened:
        reader.close()
