"""The ``consume_events`` loop: Kafka records → task state → users' streams → commit.

Per batch, in this order (the order is the guarantee):
1. adapt each record (pure); a record the adapter refuses, for whatever reason, is that
   record's problem: it is collected for the dead-letter topic with the reason;
2. apply the valid events to task state in one transaction (idempotent); if the database
   refuses the batch's data, bisect it to find the event(s) it refuses, dead-letter those
   with the database's message and apply the rest, in order;
3. produce poison and rejected records to the dead-letter topic and wait for the acks;
4. encode each deliverable event's SSE body once, store the events in the hot store
   (replay, and holes to fill) and, in the same call, the partitions' heads; push the
   events into the Channels layer;
5. commit the offsets after the batch.
A crash anywhere before 5 re-reads the batch on restart: state changes nothing the second
time, streams drop positions they already sent, so nothing is lost and nothing repeats.

Pacing: while records keep coming, a batch is read at most once per ``linger`` (setting
TASKSTREAM_CONSUMER_LINGER_MS). A batch costs a fixed time here, in the stores and in every
server (one wake per layer message): read eagerly, a flow of a few hundred events/s came as
1-5-event batches, 50 a second at any rate (issue #8). A record after a quiet spell is read
at once, and so is the batch after a full one (a backlog drains at full speed).

An outage (PostgreSQL, Redis, the layer or the dead-letter topic unreachable) is not
poison: the batch is rewound and retried with backoff, nothing is dead-lettered and
nothing committed until the dependency is back. So is any other error outside the
adapter and the database's refusals: it names no record, and a retry loses nothing.
``run_once`` drives the loop one batch at a time, so tests never start a forever loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from realtime import bus
from realtime import ingest_kafka as kafka_side
from realtime.applier import Applier
from realtime.epoch_watch import TopicRecreated
from realtime.ingest_batch import Batch, BatchResult, Flight
from realtime.ingest_kafka import Record
from realtime.isolation import OUTAGES
from realtime.store import HotStore
from streaming import metrics
from streaming.cursor import PartitionKey
from streaming.kafka import (
    ConsumerPort,
    ProducerPort,
    next_batch,
    raise_if_fatal,
)
from tasks.apply import Applied, apply_events
from tasks.apply_turn import apply_in_turn
from tasks.turns import BeforeFailed, Turn

logger = logging.getLogger(__name__)

BACKOFF_FIRST = 0.2
BACKOFF_MAX = 10.0


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
        linger: float = 0.0,
        overlap: bool = False,
        attempt: Callable[..., list[Applied]] = apply_in_turn,
    ) -> None:
        self.consumer = consumer
        self.dlq_producer = dlq_producer
        self.layer = layer
        self.store = store
        self.epoch = epoch
        self.dlq_topic = dlq_topic
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        # Pacing (above): when the last read of records returned, and whether it was full.
        self.linger, self._last_read, self._last_full = linger, float("-inf"), False
        self.applier = Applier(epoch, apply=apply, attempt=attempt, overlap=overlap)
        # librdkafka calls that block (a waiting read, rewinds, close) run on a dedicated
        # thread; those that cannot (a read of what is buffered, a queued commit), on the loop.
        self._kafka_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka")
        # Dead letters wait for their acks on a thread of their own: the Kafka thread may
        # be holding a read that waits for records.
        self._dlq_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlq")
        self._stop = False
        self._stopping: asyncio.Event | None = None
        self.outages_in_a_row = 0
        # Partitions revoked by a rebalance (appended by a Kafka call's callback, read here).
        self.revoked: list[PartitionKey] = []
        # Whether the topic still has ``epoch`` (blocking; ``realtime.epoch_watch``), asked
        # before applying records whose offsets went back; and the highest offsets read.
        self.epoch_check: Callable[[], bool] | None = None
        self._highest: dict[PartitionKey, int] = {}

    @property
    def stopping(self) -> bool:
        return self._stop

    def request_stop(self) -> None:
        """Signal-handler safe: only sets a flag; the loop stops after the current batch."""
        self._stop = True
        if self._stopping is not None:
            self._stopping.set()

    async def run(self) -> None:
        """Batches in a pipeline, each stage on its own resource: while batch N is applied
        (PostgreSQL, in a database thread), batch N+1 is read and adapted (``_read``) and its
        apply begins beside N's (``realtime.applier``), and batch N-1 is stored, pushed and
        committed (``_finish``: Redis and the layer; the commit is queued). Batches are
        applied in order, each once every one before it is, and stored, pushed and
        committed in order; a batch may be applied before the one before it is committed,
        as a crash between the two leaves it too (applying is idempotent). An outage drops
        every batch in flight and rewinds to the first record any of them holds."""
        self._stopping = asyncio.Event()
        flights: collections.deque[Flight] = collections.deque()
        ahead: asyncio.Task[Batch | None] | None = None
        try:
            while not self._stop:
                if ahead is not None:
                    batch, ahead = await ahead, None
                else:
                    batch = await self._read()
                if batch is not None:
                    # The next read waits for records if none are buffered: one that
                    # arrives while this batch is in flight begins at once.
                    ahead = asyncio.create_task(self._read())
                    flights.append(self._fly(batch, flights[-1] if flights else None))
                # In flight: at most two applies, and three batches. With no new records,
                # everything in flight ends first.
                while flights and (batch is None or len(flights) > 2):
                    oldest = flights.popleft()
                    await oldest.done
                    if oldest.batch.outage is not None:
                        for flight in flights:
                            await flight.done  # each ends unfinished: the one before did
                        dropped: list[Batch | None] = [oldest.batch, *(f.batch for f in flights)]
                        flights.clear()
                        await self._drop(dropped, ahead, oldest.batch.outage)
                        ahead = None
                        break
                if batch is None and not flights:
                    self._forget_revoked()  # nothing is in flight
                elif len(flights) > 1:
                    await flights[-2].applied
        finally:
            if ahead is not None:
                # Read, not begun: nothing of it is committed. Its error, if any, is the
                # one already propagating, or comes after the stop.
                with contextlib.suppress(Exception):
                    await ahead
            for flight in flights:
                # Their effects complete (or an outage leaves them uncommitted, re-read).
                await flight.done
            await self.close()

    def _fly(self, batch: Batch, before: Flight | None) -> Flight:
        """Start the batch's apply (after ``before``'s) and, once the batch before is done,
        its finish. Only a full batch (a backlog) takes a turn to overlap the one before:
        a paced flow's small batches gain nothing from it and keep one connection warm."""
        full = len(batch.records) >= self.batch_size
        turn = self.applier.turn(None if before is None else before.turn) if full else None
        applied = asyncio.create_task(self._apply(batch, turn, before))
        landed = asyncio.create_task(self._land(batch, applied, before))
        return Flight(batch, turn, applied, landed)

    async def _land(self, batch: Batch, applied: asyncio.Task[None], before: Flight | None) -> None:
        await applied
        if before is not None:
            await before.done
            if before.batch.outage is not None and batch.outage is None:
                self._note_outage(batch, BeforeFailed(repr(before.batch.outage)))
        if batch.outage is None:
            self._forget(batch)
            await self._finish(batch)

    async def run_once(self) -> BatchResult:
        """One batch from read to commit (or to its rewind): the loop one step at a time."""
        batch = await self._read()
        if batch is None:
            self._forget_revoked()
            return BatchResult()
        await self._apply(batch)
        if batch.outage is None:
            self._forget(batch)
            await self._finish(batch)
        if batch.outage is not None:
            await self._drop([batch], None, batch.outage)
        return batch.result

    async def _read(self) -> Batch | None:
        """The next batch, adapted, or None (no record within the poll timeout). What
        librdkafka has buffered is taken on the loop (no thread hop per batch under load);
        only a read that must wait goes to the Kafka thread."""
        wait = self._last_read + self.linger - time.monotonic()
        if wait > 0 and not self._last_full:
            await self._pause(wait)  # pacing (module docstring): at most ``linger``
        messages = self._buffered()
        if not messages:
            loop = asyncio.get_running_loop()
            messages = await loop.run_in_executor(self._kafka_thread, self._next_batch)
        if messages:  # an empty read is quiet: the next record goes at once
            self._last_read = time.monotonic()
            self._last_full = len(messages) >= self.batch_size
        # Revoked before or during this read: forgotten once every earlier batch is done.
        revoked, self.revoked = self.revoked, []
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
        if not records:
            self.revoked[:0] = revoked
            return None
        batch = Batch(records, BatchResult(records=len(records)), revoked=revoked)
        batch.log.begin(records)
        with batch.log.stage("adapt"):
            batch.adapt()
        return batch

    async def _apply(
        self, batch: Batch, turn: Turn | None = None, before: Flight | None = None
    ) -> None:
        """Apply the batch's events to task state, in ``turn`` after ``before`` (the batch
        before it, if still in flight). An outage is recorded on the batch, not raised.
        Offsets that went back are checked against the topic's id first: a topic
        re-created under the process resets its position with no other sign, and its
        records must not be applied under the old epoch (then: stop, commit nothing)."""
        try:
            back = kafka_side.went_back(batch.spans, self._highest)
            if back and self.epoch_check is not None:
                loop = asyncio.get_running_loop()
                if not await loop.run_in_executor(None, self.epoch_check):
                    self.request_stop()
                    self._note_outage(batch, TopicRecreated(f"{self.epoch} is not the topic's"))
                    return
            with batch.log.stage("apply"):
                waits = None if before is None else before.was_applied
                if turn is not None and before is not None and before.turn is None:
                    # The batch before applies alone, outside the turns: after it, then.
                    if not await before.was_applied():
                        raise BeforeFailed
                    waits = None
                batch.sort(*await self.applier.apply(batch.events, turn, waits))
        except Exception as exc:
            self._note_outage(batch, exc)
        finally:
            if turn is not None:
                turn.end(committed=False)  # a no-op once the applier ended it

    async def _finish(self, batch: Batch) -> None:
        """Dead-letter, store (and the heads), push, commit. An outage is recorded on the
        batch (nothing of it is committed); the caller rewinds."""
        try:
            with batch.log.stage("push", events=len(batch.deliverable)):
                await self._deliver(batch)
        except Exception as exc:
            self._note_outage(batch, exc)
            return
        self.outages_in_a_row = 0
        kafka_side.commit(self.consumer, batch.heads)  # queued: it does not block
        metrics.CONSUMER_BATCHES.inc()
        batch.log.end(batch.result)

    def _note_outage(self, batch: Batch, exc: Exception) -> None:
        # Whatever a record is to blame for was dead-lettered already; what escapes is the
        # stores', the layer's or the database's being down: read the batch again later.
        if not isinstance(exc, (*OUTAGES, TopicRecreated, BeforeFailed)):
            logger.exception("unexpected error while processing a batch; retrying it")
        batch.outage = exc
        batch.result.retried = True
        batch.log.end(batch.result)

    async def _drop(
        self,
        batches: list[Batch | None],
        ahead: asyncio.Task[Batch | None] | None,
        exc: BaseException,
    ) -> None:
        """An outage: every batch in flight is read again. Rewind each partition to the
        first record any of them holds (a later one may hold partitions an earlier one
        does not)."""
        if ahead is not None:
            batches.append(await ahead)
        records: list[Record] = []
        for batch in batches:
            if batch is None:
                continue
            records += batch.records
            if batch.outage is None:  # its line and span end here, as retried
                batch.result.retried = True
                batch.log.end(batch.result)
            self.revoked[:0] = batch.revoked
        self._forget_revoked()  # nothing is in flight any more
        await self._back_off(records, exc)

    def _forget(self, batch: Batch) -> None:
        # Every batch read before this one is finished: none can remember these again.
        if batch.revoked:
            self.store.forget(batch.revoked)

    def _forget_revoked(self) -> None:
        if self.revoked:
            gone, self.revoked = self.revoked, []
            self.store.forget(gone)

    async def _deliver(self, batch: Batch) -> None:
        dead, deliverable, result = batch.dead, batch.deliverable, batch.result
        if dead:
            batch.log.dead_letters(dead)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                self._dlq_thread, kafka_side.dead_letter, self.dlq_producer, self.dlq_topic, dead
            )

        # Encoded once here; the hot store and every server process reuse the text. The
        # partitions' heads are raised with the events, once they are stored.
        bodies = [event.sse_body() for event in deliverable]
        prevs = await self.store.append(deliverable, bodies, batch.heads)
        sent = await bus.publish(self.layer, deliverable, prevs, self.epoch, bodies)

        # Counted once the batch's effects are done (a retried batch is not counted twice).
        for outcome, count in result.outcomes.items():
            metrics.CONSUMER_RECORDS.labels(outcome).inc(count)
        if dead:
            metrics.CONSUMER_RECORDS.labels("dead_lettered").inc(len(dead))
        metrics.LAYER_MESSAGES.inc(sent)
        result.dead_lettered = len(dead)
        result.delivered = len(deliverable)

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
        await loop.run_in_executor(self._kafka_thread, kafka_side.rewind, self.consumer, records)
        await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until a stop is requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for((self._stopping or asyncio.Event()).wait(), seconds)

    def _next_batch(self) -> list[Any]:
        return next_batch(self.consumer, self.batch_size, self.poll_timeout)

    def _buffered(self) -> list[Any]:
        return self.consumer.consume(self.batch_size, 0)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.revoked.extend((p.topic, p.partition) for p in partitions)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        # Every batch commits before the next consume, so nothing is pending here; close()
        # leaves the group at once instead of waiting for the session to time out.
        await loop.run_in_executor(self._kafka_thread, self.consumer.close)
        await loop.run_in_executor(self._dlq_thread, self.dlq_producer.flush, 10.0)
        await self.applier.close()
        self._kafka_thread.shutdown(wait=True)
        self._dlq_thread.shutdown(wait=True)
