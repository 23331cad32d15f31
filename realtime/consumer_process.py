"""``consume_events`` as a process: the consumer (``realtime.ingest``) built from the
settings, the signals that stop it, and the watch that stops it when its topic is
re-created under it (``realtime.epoch_watch``)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from channels.layers import get_channel_layer
from confluent_kafka import Consumer, Producer
from django.db import connection

from realtime import ingest_kafka as kafka_side
from realtime.epoch_watch import EpochWatch, TopicRecreated
from realtime.ingest import EventConsumer
from realtime.store import get_store
from streaming import conf
from streaming.kafka import consumer_config, producer_config, subscribe, topic_epoch
from streaming.loop import exit_by_deadline

logger = logging.getLogger("realtime.ingest")


async def build_event_consumer(epoch: str | None = None) -> EventConsumer:
    """``epoch``: the events topic's identity, looked up from Kafka when not given."""
    settings = conf.get()
    if epoch is None:
        loop = asyncio.get_running_loop()
        epoch = await loop.run_in_executor(None, topic_epoch, settings.TOPIC_EVENTS)
    store = get_store()
    # A new epoch (a re-created topic): the store forgets the old topic's events (logged).
    await store.switch_epoch(settings.TOPIC_EVENTS, epoch)
    consumer = Consumer(consumer_config(settings.CONSUMER_GROUP, on_commit=kafka_side.committed))
    event_consumer = EventConsumer(
        consumer,
        Producer(producer_config()),
        get_channel_layer(),
        store,
        epoch=epoch,
        dlq_topic=settings.TOPIC_DLQ,
        batch_size=settings.CONSUMER_BATCH,
        linger=settings.CONSUMER_LINGER_MS / 1000,
        overlap=connection.vendor == "postgresql",
    )
    subscribe(consumer, [settings.TOPIC_EVENTS], on_revoke=event_consumer.on_revoke)
    return event_consumer


async def run_consumer() -> None:
    """Consume until a signal, or until the events topic is re-created: then raise
    ``TopicRecreated`` once the consumer has stopped, for the supervisor to start the
    process again on the new epoch."""
    settings = conf.get()
    event_consumer = await build_event_consumer()
    # Everything alive now (Django, the libraries, the clients) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it while
    # batches allocate (CPython's advice for long-running servers, gc.freeze).
    gc.freeze()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if not event_consumer.stopping:
            # Whatever Kafka does (a commit can block for its socket timeout), the
            # process exits by the stop deadline.
            exit_by_deadline("consume_events")
        event_consumer.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    watch = EpochWatch(settings.TOPIC_EVENTS, event_consumer.epoch, settings.EPOCH_CHECK_SECONDS)
    event_consumer.epoch_check = watch.check  # also before records whose offsets went back
    watching = asyncio.create_task(watch.run(stop))
    logger.info("consume_events started on %s", settings.TOPIC_EVENTS)
    try:
        await event_consumer.run()
    finally:
        watching.cancel()
    logger.info("consume_events stopped")
    if watch.changed_to is not None:
        raise TopicRecreated(
            f"{settings.TOPIC_EVENTS} was re-created (epoch {watch.changed_to}, not "
            f"{event_consumer.epoch}): start consume_events again"
        )
