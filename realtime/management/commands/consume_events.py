"""Run the Kafka → SSE consumer (see realtime/consumer.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from channels.layers import get_channel_layer
from confluent_kafka import Consumer, Producer
from django.core.management.base import BaseCommand, CommandParser
from prometheus_client import start_http_server

from realtime import conf
from realtime.consumer import EventConsumer
from realtime.kafka import (
    consumer_config,
    ensure_project_topics,
    producer_config,
    subscribe,
    topic_epoch,
)
from realtime.store import get_store

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Consume task events from Kafka, update tasks and push events to users' streams."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--metrics-port", type=int, default=0, help="serve /metrics here")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["metrics_port"]:
            start_http_server(options["metrics_port"], addr="127.0.0.1")
        ensure_project_topics()
        asyncio.run(run_consumer())


async def build_event_consumer(epoch: str | None = None) -> EventConsumer:
    """``epoch``: the events topic's identity, looked up from Kafka when not given."""
    settings = conf.get()
    if epoch is None:
        loop = asyncio.get_running_loop()
        epoch = await loop.run_in_executor(None, topic_epoch, settings.TOPIC_EVENTS)
    store = get_store()
    await store.set_epoch(settings.TOPIC_EVENTS, epoch)
    logger.info("epoch of %s is %s", settings.TOPIC_EVENTS, epoch)
    consumer = Consumer(consumer_config(settings.CONSUMER_GROUP))
    subscribe(consumer, [settings.TOPIC_EVENTS])
    return EventConsumer(
        consumer,
        Producer(producer_config()),
        get_channel_layer(),
        store,
        epoch=epoch,
        dlq_topic=settings.TOPIC_DLQ,
        batch_size=settings.CONSUMER_BATCH,
    )


async def run_consumer() -> None:
    event_consumer = await build_event_consumer()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event_consumer.request_stop)
    logger.info("consume_events started on %s", conf.get().TOPIC_EVENTS)
    await event_consumer.run()
    logger.info("consume_events stopped")
