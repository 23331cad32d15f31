"""`make run`: the whole product in one process, with no external service.

SQLite, the in-process channel layer and librdkafka's mock Kafka cluster (it ships inside
confluent-kafka) stand in for PostgreSQL, Redis and Kafka. The worker, outbox relay,
``consume_events`` loop and the ASGI server are the same code the real deployment runs;
only where they live differs (threads and one event loop instead of processes).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import Any

import uvicorn
from confluent_kafka import Producer
from django.contrib.auth import get_user_model
from django.core.management import call_command

from realtime.consumer_process import build_event_consumer
from realtime.routing import build_application
from streaming import conf
from streaming.kafka import cluster_epoch
from streaming.loop import StopFlag
from tasks.outbox import run_relay
from tasks.worker import run_worker

logger = logging.getLogger(__name__)

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"
_MOCK_ADDRESS = re.compile(r"Mock cluster enabled.*replaced with (\S+)")


class _MockAddressCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.address: str | None = None
        self.found = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        match = _MOCK_ADDRESS.search(record.getMessage())
        if match:
            self.address = match.group(1)
            self.found.set()


def start_mock_cluster(timeout: float = 10.0) -> tuple[Producer, str]:
    """Start librdkafka's mock cluster; return the client that owns it and its address.

    The cluster lives as long as the returned client. Its address is only reported in a
    log line, so a handler reads it from there.
    """
    catcher = _MockAddressCatcher()
    mock_logger = logging.getLogger("rdkafka.mock")
    mock_logger.addHandler(catcher)
    mock_logger.setLevel(logging.INFO)
    owner = Producer({"test.mock.num.brokers": 1, "logger": mock_logger})
    waited = 0.0
    while not catcher.found.is_set() and waited < timeout:
        owner.poll(0.1)
        waited += 0.1
    mock_logger.removeHandler(catcher)
    if catcher.address is None:
        raise RuntimeError("librdkafka's mock cluster did not report its address")
    return owner, catcher.address


def create_topics_on_mock(address: str, topics: list[str]) -> None:
    """The mock cluster has no controller for CreateTopics; it creates a topic (with four
    partitions) when a client asks for its metadata."""
    probe = Producer({"bootstrap.servers": address})
    for topic in topics:
        probe.list_topics(topic=topic, timeout=10)
    probe.flush(5)


def prepare_database() -> None:
    call_command("migrate", interactive=False, verbosity=0)
    user_model = get_user_model()
    # Made once: a password changed since (the admin, `changepassword`) is kept.
    user, created = user_model.objects.get_or_create(username=DEMO_USER)
    if created:
        user.set_password(DEMO_PASSWORD)
        user.is_staff = True
        user.is_superuser = True
        user.save()


class _AnnouncingServer(uvicorn.Server):
    """Says where to go once the socket listens, not before (a busy machine starts
    slowly, and a person or a test would otherwise knock on a closed port)."""

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            url = f"http://{self.config.host}:{self.config.port}/"
            print(
                f"\nTaskstream is running at {url}\n"
                f"  log in as {DEMO_USER} / {DEMO_PASSWORD} unless you changed it"
                f" (also for {url}admin/)\n"
                "  Ctrl-C stops everything.\n",
                flush=True,
            )


def run(host: str, port: int) -> None:
    settings = conf.get()
    mock_owner: Producer | None = None
    if not settings.KAFKA_BOOTSTRAP_SERVERS:
        mock_owner, address = start_mock_cluster()
        conf.set_kafka_bootstrap(address)
        create_topics_on_mock(
            address, [settings.TOPIC_EVENTS, settings.TOPIC_REQUESTS, settings.TOPIC_DLQ]
        )
        logger.info("embedded Kafka (librdkafka mock cluster) at %s", address)
    prepare_database()

    flag = StopFlag("run_embedded").install()
    threads = [
        threading.Thread(target=run_worker, args=(flag,), name="worker", daemon=True),
        threading.Thread(target=run_relay, args=(flag,), name="outbox-relay", daemon=True),
    ]
    for thread in threads:
        thread.start()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        # The mock cluster cannot describe topics (asking would wait out a timeout).
        epoch = await loop.run_in_executor(None, cluster_epoch) if mock_owner else None
        event_consumer = await build_event_consumer(epoch)
        consuming = asyncio.create_task(event_consumer.run(), name="consume-events")
        server = _AnnouncingServer(
            uvicorn.Config(
                build_application(),
                host=host,
                port=port,
                lifespan="off",
                log_level="info",
                # uvicorn's lines go through the project's renderer, and the access line
                # is the project's own (realtime/requestlog.py), as under `serve`.
                log_config=None,
                access_log=False,
            )
        )
        try:
            await server.serve()
        finally:
            event_consumer.request_stop()
            await consuming

    try:
        asyncio.run(serve())
    finally:
        flag.set()
        for thread in threads:
            thread.join(timeout=15)
        if mock_owner is not None:
            mock_owner.flush(1)
        print("Taskstream stopped.", flush=True)
