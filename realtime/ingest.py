"""The ``consume_events`` loop: Kafka records → task state → users' streams → commit.

Per batch, in this order (the order is the guarantee):
1. adapt each record (pure); a record the adapter refuses, for whatever reason, is that
   record's problem: it is collected for the dead-letter topic with the reason;
2. apply the valid events to task state in one transaction (idempotent); if the database
   refuses the batch's data, bisect it to find the event(s) it refuses, dead-letter those
   with the database's message and apply the rest, in order;
3. produce poison and rejected records to the dead-letter topic and wait for the acks;
4. encode each deliverable event's SSE body once, store the events in the hot store
   (replay, and holes to fill), and push them into the Channels layer;
5. record the partitions' heads, then commit the offsets after the batch.
A crash anywhere before 5 re-reads the batch on restart: state changes nothing the second
time, streams drop positions they already sent, so nothing is lost and nothing repeats.

An outage (PostgreSQL, Redis, the layer or the dead-letter topic unreachable) is not
poison: the batch is rewound and retried with backoff, nothing is dead-lettered and
nothing committed until the dependency is back. So is any other error outside the
adapter and the database's refusals: it names no record, and a retry loses nothing. The loop
(``run_once``) so tests never start a forever loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.exceptions
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from django.db import InterfaceError, OperationalError

from realtime import bus
from realtime.store import HotStore, get_store
from streaming import conf, metrics
from streaming.adapter import InvalidRecord, adapt
from streaming.cursor import PartitionKey
from streaming.events import Position, TaskEvent
from streaming.kafka import (
    ConsumerPort,
    ProducerPort,
    consumer_config,
    next_batch,
    producer_config,
    raise_if_fatal,
    rewind,
    subscribe,
    topic_epoch,
)
from streaming.loop import exit_by_deadline
from tasks.apply import Applied, Outcome, apply_events

logger = logging.getLogger(__name__)


if TYPE_CHECKING:
    # confluent-kafka's own type; test fakes implement the methods used here.
    Record = Message[bytes, bytes]


class DeadLetterError(Exception):
    """The dead-letter topic did not acknowledge; nothing in the batch is committed."""


# A dependency that is down, not a record that is bad: retry the batch, blame no record.
OUTAGES: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    DeadLetterError,
)
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 10.0


@dataclass
class BatchResult:
    records: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    # The batch met an outage and will be read again (nothing of it was committed).
    retried: bool = False


class EventConsumer:
    def __init__(
        self,
        consumer: ConsumerPort,
        dlq_producer: ProducerPort,
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
        self._stopping: asyncio.Event | None = None
        self.outages_in_a_row = 0
        # Partitions revoked by a rebalance (appended on the Kafka thread, read here).
        self.revoked: list[PartitionKey] = []

    @property
    def stopping(self) -> bool:
        return self._stop

    def request_stop(self) -> None:
        """Signal-handler safe: only sets a flag; the loop stops after the current batch."""
        self._stop = True
        if self._stopping is not None:
            self._stopping.set()

    async def run(self) -> None:
        self._stopping = asyncio.Event()
        try:
            while not self._stop:
                await self.run_once()
        finally:
            await self.close()

    async def run_once(self) -> BatchResult:
        loop = asyncio.get_running_loop()
        messages = await loop.run_in_executor(self._kafka_thread, self._next_batch)
        if self.revoked:
            gone, self.revoked = self.revoked, []
            self.store.forget(gone)
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
            else:
                raise_if_fatal(err)
                logger.warning("kafka consumer error (retried by librdkafka): %s", err)
        result.records = len(records)
        if not records:
            return result
        try:
            await self._process(records, result)
        except Exception as exc:
            # Whatever a record is to blame for was dead-lettered inside _process; what
            # escapes it is the stores' or the layer's: read the batch again later.
            if not isinstance(exc, OUTAGES):
                logger.exception("unexpected error after the batch was applied; retrying it")
            await self._back_off(records, exc)
            result.retried = True
            return result
        self.outages_in_a_row = 0
        await loop.run_in_executor(self._kafka_thread, self._commit, records)
        metrics.CONSUMER_BATCHES.inc()
        return result

    async def _process(self, records: list[Record], result: BatchResult) -> None:
        events: list[TaskEvent] = []
        by_position: dict[Position, Record] = {}
        dead: list[tuple[Record, str]] = []
        for record in records:
            try:
                event = adapt(record)
                events.append(event)
                by_position[event.position] = record
            except InvalidRecord as exc:
                dead.append((record, exc.reason))
            except Exception as exc:  # the adapter's bug is still this record's problem
                logger.exception("adapter failed on %s", _where(record))
                dead.append((record, f"adapter error: {type(exc).__name__}: {exc}"[:1000]))

        applied, refused = await self._apply_isolating(events)
        for event, reason in refused:
            dead.append((by_position[event.position], reason))
        deliverable: list[TaskEvent] = []
        outcomes: dict[str, int] = {}
        for item in applied:
            outcomes[item.outcome.value] = outcomes.get(item.outcome.value, 0) + 1
            if item.outcome is Outcome.REJECTED:
                dead.append((by_position[item.event.position], item.reason))
            elif item.deliver:
                deliverable.append(item.event)

        if dead:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._kafka_thread, self._dead_letter, dead)

        # Encoded once here; the hot store and every server process reuse the text.
        bodies = [event.sse_body() for event in deliverable]
        prevs = await self.store.append(deliverable, bodies)
        sent = await bus.publish(self.layer, deliverable, prevs, self.epoch, bodies)
        await self.store.set_heads(_heads(records))

        # Counted once the batch's effects are done (a retried batch is not counted twice).
        for outcome, count in outcomes.items():
            metrics.CONSUMER_RECORDS.labels(outcome).inc(count)
        if dead:
            metrics.CONSUMER_RECORDS.labels("dead_lettered").inc(len(dead))
        metrics.LAYER_MESSAGES.inc(sent)
        result.outcomes = outcomes
        result.dead_lettered = len(dead)
        result.delivered = len(deliverable)

    async def _apply_isolating(
        self, events: list[TaskEvent]
    ) -> tuple[list[Applied], list[tuple[TaskEvent, str]]]:
        """Apply ``events``; if the database refuses the batch's data, bisect it and
        return the events it refuses (with its message) instead of failing the rest."""
        if not events:
            return [], []
        try:
            return await self._apply(events), []
        except OUTAGES:
            raise
        except Exception as exc:
            if len(events) > 1:
                middle = len(events) // 2
                left = await self._apply_isolating(events[:middle])
                right = await self._apply_isolating(events[middle:])
                return left[0] + right[0], left[1] + right[1]
            refusal = exc
        # One event left. A unique-key race with another consumer during a rebalance
        # resolves on a second try (the event is then a redelivery); data does not.
        try:
            return await self._apply(events), []
        except OUTAGES:
            raise
        except Exception:
            event = events[0]
            logger.warning(
                "database refused event %s at %s: %s", event.event_id, event.position, refusal
            )
            metrics.CONSUMER_ISOLATED.inc()
            return [], [(event, f"database refused it: {type(refusal).__name__}: {refusal}"[:1000])]

    async def _back_off(self, records: list[Record], exc: BaseException) -> None:
        """Read the batch again after a delay that doubles with each outage in a row."""
        self.outages_in_a_row += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.outages_in_a_row - 1))
        delay *= random.uniform(0.8, 1.0)
        metrics.CONSUMER_OUTAGES.labels(type(exc).__name__).inc()
        logger.warning(
            "outage while processing %d records (%s: %s); retry %d in %.1f s, nothing committed",
            len(records),
            type(exc).__name__,
            exc,
            self.outages_in_a_row,
            delay,
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._kafka_thread, self._rewind, records)
        stopping = self._stopping or asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)

    def _next_batch(self) -> list[Any]:
        return next_batch(self.consumer, self.batch_size, self.poll_timeout)

    def _rewind(self, records: Sequence[Record]) -> None:
        rewind(self.consumer, list(records))

    def _dead_letter(self, dead: list[tuple[Record, str]]) -> None:
        for record, reason in dead:
            logger.warning("dead-lettering %s: %s", _where(record), reason)
            headers = [
                ("reason", reason.encode("utf-8", "replace")),
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
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in _heads(records).items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # Everything the batch does is done; a partition that moved away meanwhile is
            # re-read by its new owner, idempotently. Nothing to undo, nothing lost.
            metrics.CONSUMER_COMMIT_FAILURES.inc()
            logger.warning("commit failed (the batch's effects stand): %s", exc)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.revoked.extend((p.topic, p.partition) for p in partitions)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        # Every batch commits before the next consume, so nothing is pending here; close()
        # leaves the group at once instead of waiting for the session to time out.
        await loop.run_in_executor(self._kafka_thread, self.consumer.close)
        await loop.run_in_executor(self._kafka_thread, self.dlq_producer.flush, 10.0)
        self._kafka_thread.shutdown(wait=True)


def _where(record: Record) -> str:
    return f"{record.topic()}:{record.partition()}:{record.offset()}"


def _heads(records: Sequence[Record]) -> dict[tuple[str, int], int]:
    """The highest offset per partition in ``records``."""
    heads: dict[tuple[str, int], int] = {}
    for record in records:
        key = (str(record.topic()), int(record.partition() or 0))
        heads[key] = max(heads.get(key, -1), int(record.offset() or 0))
    return heads


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
    event_consumer = EventConsumer(
        consumer,
        Producer(producer_config()),
        get_channel_layer(),
        store,
        epoch=epoch,
        dlq_topic=settings.TOPIC_DLQ,
        batch_size=settings.CONSUMER_BATCH,
    )
    subscribe(consumer, [settings.TOPIC_EVENTS], on_revoke=event_consumer.on_revoke)
    return event_consumer


async def run_consumer() -> None:
    event_consumer = await build_event_consumer()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if not event_consumer.stopping:
            # Whatever Kafka does (a commit can block for its socket timeout), the
            # process exits by the stop deadline.
            exit_by_deadline("consume_events")
        event_consumer.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    logger.info("consume_events started on %s", conf.get().TOPIC_EVENTS)
    await event_consumer.run()
    logger.info("consume_events stopped")
