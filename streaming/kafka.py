"""Kafka client configuration in one place; clients are only ever made by callers, on demand."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streaming import conf
from streaming.cursor import UNKNOWN_EPOCH

logger = logging.getLogger(__name__)


class ConsumerPort(Protocol):
    """The part of ``confluent_kafka.Consumer`` the loops call (test fakes implement it)."""

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]: ...
    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[True]
    ) -> list[TopicPartition] | None: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def close(self) -> None: ...


class ProducerPort(Protocol):
    """The part of ``confluent_kafka.Producer`` the loops call (test fakes implement it)."""

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        *,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None: ...
    def flush(self, timeout: float = -1) -> int: ...


STATIC_SESSION_TIMEOUT_MS = 45_000


def consumer_config(group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that commits by hand, only after its side effects are done."""
    config: dict[str, Any] = {
        "bootstrap.servers": conf.get().require_kafka(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Latency: the broker answers a fetch within 10 ms even when it has little data.
        "fetch.wait.max.ms": 10,
        "fetch.error.backoff.ms": 10,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "cooperative-sticky",
        "logger": logging.getLogger("rdkafka.consumer"),
    }
    settings = conf.get()
    instance_id = {
        settings.CONSUMER_GROUP: settings.CONSUMER_INSTANCE_ID,
        settings.WORKER_GROUP: settings.WORKER_INSTANCE_ID,
    }.get(group_id)
    if instance_id:
        # Static membership (consume_events, run_worker): a restarted process with the same
        # id takes its partitions back at once, instead of waiting for the group to expire
        # the dead member (session.timeout.ms). Each process of a group needs its own id.
        config["group.instance.id"] = instance_id
        # And a longer session: a restart no longer needs a short one, and with 10 s a
        # broker that stays away longer (a restart) times the session out on the client,
        # which rejoins under a new member id; a commit still in flight under the old one
        # is then fenced, a fatal error that costs the process a restart. A static member
        # that stops for good keeps its partitions this long.
        config["session.timeout.ms"] = STATIC_SESSION_TIMEOUT_MS
    config.update(overrides)
    return config


def reader_config(name: str) -> dict[str, Any]:
    """A consumer that only ever assign()s ranges: it never joins a group or commits.
    librdkafka still wants a group id; a unique one keeps it from meaning anything."""
    return {
        "bootstrap.servers": conf.get().require_kafka(),
        "group.id": f"taskstream-{name}-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 10,
        "logger": logging.getLogger(f"rdkafka.{name}"),
    }


def producer_config(**overrides: Any) -> dict[str, Any]:
    """An idempotent producer: a retry after a lost ack does not write a record twice."""
    config: dict[str, Any] = {
        "bootstrap.servers": conf.get().require_kafka(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "logger": logging.getLogger("rdkafka.producer"),
    }
    config.update(overrides)
    return config


def admin_config() -> dict[str, Any]:
    # With a Python logger, librdkafka's lines go through the project's log renderer
    # (JSON in production) instead of straight to stderr as plain text.
    return {
        "bootstrap.servers": conf.get().require_kafka(),
        "logger": logging.getLogger("rdkafka.admin"),
    }


class EpochUnavailable(Exception):
    """The topic's id could not be read before the deadline."""


def topic_epoch(topic: str, timeout: float = 30.0, *, admin: Any | None = None) -> str:
    """The topic's identity: its Kafka topic id, which changes when the topic is deleted
    and created again (offsets then restart).

    A failed describe (a broker restarting, a request timing out) is retried with backoff
    until ``timeout``; then this raises ``EpochUnavailable``. It never guesses: another
    epoch would reset every client's cursor. Only librdkafka's mock cluster (the embedded
    mode) cannot describe topics; its caller asks for ``cluster_epoch`` explicitly.
    """
    admin = admin or AdminClient(admin_config())
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        left = max(deadline - time.monotonic(), 0.5)
        try:
            futures = admin.describe_topics(TopicCollection([topic]), request_timeout=left)
            topic_id = str(futures[topic].result().topic_id)
            if topic_id and topic_id != "AAAAAAAAAAAAAAAAAAAAAA":
                return _url_safe(topic_id)
            problem = "the broker gave no topic id"
        except Exception as exc:
            problem = str(exc) or type(exc).__name__
        if time.monotonic() + delay >= deadline:
            raise EpochUnavailable(f"cannot describe topic {topic} within {timeout}s: {problem}")
        logger.warning("cannot describe topic %s (%s); retrying", topic, problem)
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def cluster_epoch(timeout: float = 30.0) -> str:
    """The cluster id as an epoch: librdkafka's mock cluster (the embedded mode) cannot
    describe topics, and a new mock cluster is a new cluster every run."""
    admin = AdminClient(admin_config())
    return _url_safe(admin.list_topics(timeout=timeout).cluster_id or UNKNOWN_EPOCH)


def _url_safe(kafka_id: str) -> str:
    # Kafka prints ids in standard base64; the URL-safe alphabet keeps `+` and `/` out of
    # SSE ids and query strings.
    return kafka_id.replace("+", "-").replace("/", "_")


def ensure_project_topics() -> None:
    """Create the events, requests and dead-letter topics when missing (idempotent)."""
    settings = conf.get()
    ensure_topics(
        [settings.TOPIC_EVENTS, settings.TOPIC_REQUESTS, settings.TOPIC_DLQ],
        settings.TOPIC_PARTITIONS,
    )


def ensure_topics(topics: list[str], partitions: int, timeout: float = 30.0) -> None:
    """Create ``topics`` when missing; existing topics are left as they are."""
    admin = AdminClient(admin_config())
    existing = admin.list_topics(timeout=timeout).topics
    wanted = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]
    missing = [t for t in wanted if t.topic not in existing]
    if not missing:
        return
    for topic, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result()
            logger.info("created topic %s with %d partitions", topic, partitions)
        except Exception as exc:  # TOPIC_ALREADY_EXISTS from a concurrent creator is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def subscribe(
    consumer: Consumer,
    topics: list[str],
    on_revoke: Callable[[list[TopicPartition]], None] | None = None,
) -> None:
    """Subscribe with assignment changes logged: operators (and tests) see when a process
    starts owning partitions. ``on_revoke`` runs (on librdkafka's calling thread) when
    partitions move away."""

    def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("assigned %s", _describe(partitions))

    def revoked(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("revoked %s", _describe(partitions))
        if on_revoke is not None:
            on_revoke(partitions)

    consumer.subscribe(topics, on_assign=on_assign, on_revoke=revoked, on_lost=revoked)


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}:{p.partition}" for p in partitions) or "nothing"


def next_batch(consumer: ConsumerPort, size: int, timeout: float) -> list[Any]:
    """Up to ``size`` records: whatever is buffered now, else wait up to ``timeout`` for
    the first one and take what came with it.

    ``consume(size, timeout)`` alone waits out the whole timeout unless ``size`` records
    are ready: at low rates that added up to 200 ms to every event's latency.
    """
    batch = consumer.consume(size, 0)
    if batch:
        return batch
    first = consumer.consume(1, timeout)
    if not first:
        return []
    return first + consumer.consume(size - 1, 0) if size > 1 else first


def raise_if_fatal(err: KafkaError) -> None:
    """Raise a fatal error: the client is unusable (a static group member fenced after a
    broker restart, an idempotent producer's lost state), so the process must exit and its
    supervisor start a new one. An error a consumer returns as a message has the code
    ``_FATAL`` and ``fatal()`` false: check both."""
    if err.code() == KafkaError._FATAL or err.fatal():
        raise KafkaException(err)


def rewind(consumer: ConsumerPort, messages: list[Any]) -> None:
    """Seek each partition of ``messages`` back to its first one, so the next read returns
    them again (and drops whatever librdkafka had fetched after them): a batch a dependency
    outage kept from being handled is read again, in order, nothing skipped."""
    firsts: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (str(message.topic()), int(message.partition() or 0))
        offset = int(message.offset() or 0)
        firsts[key] = min(firsts.get(key, offset), offset)
    for (topic, partition), offset in firsts.items():
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            # Not ours any more (a rebalance): its new owner reads it from the commit.
            logger.info("not rewinding %s:%s: %s", topic, partition, exc)


class RangeError(Exception):
    """A range that cannot be read: no such topic, or no progress before the deadline."""


class RangeReader:
    """One Kafka consumer, never in a group, reading offset ranges one after another.

    The one range reader of the project: a stream's Kafka replay (one per process, on its
    own thread) and ``manage.py replay_events`` both read through it. Not thread-safe: a
    reader belongs to one thread.
    """

    def __init__(self, name: str, consumer: Any | None = None, *, timeout: float = 30.0) -> None:
        self.name = name
        self._consumer = consumer
        # A read that makes no progress for this long fails instead of hanging its caller.
        self.timeout = timeout

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = Consumer(reader_config(self.name))
        return self._consumer

    def partitions(self, source: str) -> list[int]:
        metadata = self.consumer.list_topics(source, timeout=self.timeout)
        topic = metadata.topics.get(source)
        if topic is None or topic.error is not None or not topic.partitions:
            raise RangeError(f"topic {source!r} does not exist")
        return sorted(topic.partitions)

    def watermarks(self, source: str, partition: int) -> tuple[int, int]:
        """(earliest retained offset, offset the next record will get)."""
        low, high = self.consumer.get_watermark_offsets(
            TopicPartition(source, partition), timeout=self.timeout
        )
        return int(low), int(high)

    def offsets_for_time(self, source: str, partitions: list[int], millis: int) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is at or after ``millis``; -1 if none."""
        found = self.consumer.offsets_for_times(
            [TopicPartition(source, p, millis) for p in partitions], timeout=self.timeout
        )
        return {tp.partition: tp.offset for tp in found}

    def read(
        self,
        source: str,
        partition: int,
        first: int,
        last: int,
        keep: Callable[[Any], bool] | None = None,
    ) -> list[Any]:
        """The records at offsets ``first..last`` (inclusive) that ``keep`` accepts, in order.

        Only what is kept stays in memory, so a long scan for one user's records holds only
        that user's. Fetch errors are logged and retried by librdkafka; a read that makes no
        progress for ``timeout`` seconds raises ``RangeError``.
        """
        if last < first:
            return []
        consumer = self.consumer
        consumer.assign([TopicPartition(source, partition, first)])
        records: list[Any] = []
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                batch = consumer.consume(500, 1.0) or []
                for message in batch:
                    if message.error():
                        logger.warning(
                            "kafka error reading %s:%s: %s", source, partition, message.error()
                        )
                        continue
                    offset = message.offset()
                    if offset is None or offset > last:
                        return records
                    if keep is None or keep(message):
                        records.append(message)
                    if offset >= last:
                        return records
                if batch:
                    deadline = time.monotonic() + self.timeout
                    continue
                # Offsets can have no record (compaction, transaction markers): the
                # position tells whether the range is behind us.
                (position,) = consumer.position([TopicPartition(source, partition)])
                if position.offset > last:
                    return records
                if time.monotonic() > deadline:
                    raise RangeError(
                        f"no progress reading {source}:{partition} offsets {first}..{last} "
                        f"for {self.timeout:.0f} s"
                    )
        finally:
            consumer.unassign()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
