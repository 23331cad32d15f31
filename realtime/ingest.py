"""The ``consume_events`` loop: Kafka records → task state → users' streams → commit.

Per batch, in this order (the order is the guarantee):
1. adapt each record (pure); poison records are collected for the dead-letter topic;
2. apply the valid events to task state in one transaction (idempotent);
3. produce poison and rejected records to the dead-letter topic and wait for the acks;
4. store the deliverable events in the hot store (replay, and holes to fill);
5. push them into the Channels layer;
6. record the partitions' heads, then commit the offsets after the batch.
A crash anywhere before 6 re-reads the batch on restart: state changes nothing the second
time, streams drop positions they already sent, so nothing is lost and nothing repeats.
The loop is driven one batch at a time (``run_once``) so tests never start a forever loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from realtime import bus
from realtime.store import HotStore, get_store
from streaming import conf, metrics
from streaming.adapter import InvalidRecord, adapt
from streaming.events import TaskEvent
from streaming.kafka import consumer_config, next_batch, producer_config, subscribe, topic_epoch
from tasks.services import Applied, Outcome, apply_events

logger = logging.getLogger(__name__)


if TYPE_CHECKING:
    # confluent-kafka's own type; test fakes implement the methods used here.
    Record = Message[bytes, bytes]


@dataclass
class BatchResult:
    records: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class DeadLetterError(Exception):
    """The dead-letter topic did not acknowledge; nothing in the batch is committed."""


class EventConsumer:
    def __init__(
        self,
        consumer: Consumer,
        dlq_producer: Producer,
        layer: Any,
        store: HotStore,
        *,
        epoch: str,
        dlq_topic: str,
        batch_size: int = 500,
        poll_timeout: float = 0.2,
        apply: Callable[..., list[Applied]] = apply_events,
    ) -> None:
        self.consumer = consumer
        self.dlq_producer = dlq_producer
        self.layer = layer
        self.store = store
        self.epoch = epoch
        self.dlq_topic = dlq_topic
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self._apply = database_sync_to_async(functools.partial(apply, epoch=epoch))
        # librdkafka calls block; one dedicated thread keeps them off the event loop and
        # in one thread, which the consumer handle prefers.
        self._kafka_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka")
        self._stop = False

    def request_stop(self) -> None:
        """Signal-handler safe: only sets a flag; the loop stops after the current batch."""
        self._stop = True

    async def run(self) -> None:
        try:
            while not self._stop:
                await self.run_once()
        finally:
            await self.close()

    async def run_once(self) -> BatchResult:
        loop = asyncio.get_running_loop()
        messages = await loop.run_in_executor(self._kafka_thread, self._next_batch)
        result = BatchResult()
        if not messages:
            return result

        records: list[Record] = []
        for message in messages:
            err = message.error()
            if err is None:
                records.append(message)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise KafkaException(err)
            else:
                logger.warning("kafka consumer error (retried by librdkafka): %s", err)
        result.records = len(records)
        if not records:
            return result

        events: list[TaskEvent] = []
        dead: list[tuple[Record, str]] = []
        for record in records:
            try:
                events.append(adapt(record))
            except InvalidRecord as exc:
                dead.append((record, exc.reason))
        by_position = {e.position: r for e, r in zip(events, _valid(records, dead), strict=True)}

        applied = await self._apply(events)
        deliverable: list[TaskEvent] = []
        for item in applied:
            result.outcomes[item.outcome.value] = result.outcomes.get(item.outcome.value, 0) + 1
            metrics.CONSUMER_RECORDS.labels(item.outcome.value).inc()
            if item.outcome is Outcome.REJECTED:
                dead.append((by_position[item.event.position], item.reason))
            elif item.deliver:
                deliverable.append(item.event)

        if dead:
            await loop.run_in_executor(self._kafka_thread, self._dead_letter, dead)
            result.dead_lettered = len(dead)
            metrics.CONSUMER_RECORDS.labels("dead_lettered").inc(len(dead))

        prevs = await self.store.append(deliverable)
        sent = await bus.publish(self.layer, deliverable, prevs, self.epoch)
        metrics.LAYER_MESSAGES.inc(sent)
        result.delivered = len(deliverable)
        await self.store.set_heads(_heads(records))

        await loop.run_in_executor(self._kafka_thread, self._commit, records)
        metrics.CONSUMER_BATCHES.inc()
        return result

    def _next_batch(self) -> list[Any]:
        return next_batch(self.consumer, self.batch_size, self.poll_timeout)

    def _dead_letter(self, dead: list[tuple[Record, str]]) -> None:
        for record, reason in dead:
            logger.warning(
                "dead-lettering %s:%s:%s: %s",
                record.topic(),
                record.partition(),
                record.offset(),
                reason,
            )
            headers = [
                ("reason", reason.encode()),
                ("source", str(record.topic()).encode()),
                ("partition", str(record.partition()).encode()),
                ("offset", str(record.offset()).encode()),
                *(record.headers() or []),
            ]
            self.dlq_producer.produce(
                self.dlq_topic, value=record.value(), key=record.key(), headers=headers
            )
        remaining = self.dlq_producer.flush(30.0)
        if remaining:
            raise DeadLetterError(f"{remaining} dead-letter record(s) not acknowledged")

    def _commit(self, records: Sequence[Record]) -> None:
        self.consumer.commit(
            offsets=[TopicPartition(t, p, o + 1) for (t, p), o in _heads(records).items()],
            asynchronous=False,
        )

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        # Every batch commits before the next consume, so nothing is pending here; close()
        # leaves the group at once instead of waiting for the session to time out.
        await loop.run_in_executor(self._kafka_thread, self.consumer.close)
        await loop.run_in_executor(self._kafka_thread, self.dlq_producer.flush, 10.0)
        self._kafka_thread.shutdown(wait=True)


def _heads(records: Sequence[Record]) -> dict[tuple[str, int], int]:
    """The highest offset per partition in ``records``."""
    heads: dict[tuple[str, int], int] = {}
    for record in records:
        key = (str(record.topic()), int(record.partition() or 0))
        heads[key] = max(heads.get(key, -1), int(record.offset() or 0))
    return heads


def _valid(records: Sequence[Record], dead: list[tuple[Record, str]]) -> list[Record]:
    poisoned = {id(r) for r, _ in dead}
    return [r for r in records if id(r) not in poisoned]


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
