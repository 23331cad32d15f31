"""The ingest loop's Kafka side: what ``consume_events`` does to the broker for a batch
(rewind it with ``streaming.kafka.rewind``, dead-letter its poison records, commit it).
Rewinding and dead-lettering block on librdkafka and run on threads of the loop's (the
Kafka thread, the dead-letter thread); ``commit`` only queues a request, and runs on the
event loop."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from streaming import metrics
from streaming.kafka import ConsumerPort, ProducerPort, rewind

__all__ = [
    "DeadLetterError",
    "commit",
    "committed",
    "dead_letter",
    "rewind",
    "spans",
    "went_back",
    "where",
]

logger = logging.getLogger("realtime.ingest")

if TYPE_CHECKING:
    # confluent-kafka's own type; test fakes implement the methods used here.
    Record: TypeAlias = Message[bytes, bytes]
else:
    Record = Message

# How long the dead-letter topic may take to acknowledge a batch's poison records.
DEAD_LETTER_ACK_S = 30.0


class DeadLetterError(Exception):
    """The dead-letter topic did not acknowledge; nothing in the batch is committed."""


def where(record: Record) -> str:
    return f"{record.topic()}:{record.partition()}:{record.offset()}"


def spans(records: Sequence[Record]) -> dict[tuple[str, int], tuple[int, int]]:
    """The lowest and the highest offset per partition in ``records``."""
    found: dict[tuple[str, int], tuple[int, int]] = {}
    for record in records:
        key = (str(record.topic()), int(record.partition() or 0))
        offset = int(record.offset() or 0)
        low, high = found.get(key, (offset, offset))
        found[key] = (min(low, offset), max(high, offset))
    return found


def went_back(
    spans: Mapping[tuple[str, int], tuple[int, int]], highest: dict[tuple[str, int], int]
) -> bool:
    """Whether a batch (its ``spans``) holds an offset at or before the highest this process
    read in that partition (then raised to the batch's): a rewind, a rebalance's re-read, or
    a topic re-created under the process (its fetch position reset to the new topic's
    start)."""
    back = False
    for key, (low, high) in spans.items():
        seen = highest.get(key, -1)
        back = back or low <= seen
        highest[key] = max(seen, high)
    return back


def dead_letter(producer: ProducerPort, topic: str, dead: Sequence[tuple[Record, str]]) -> None:
    """Produce each record with its reason and position as headers; wait for the acks."""
    for record, reason in dead:
        headers = [
            ("reason", reason.encode("utf-8", "replace")),
            ("source", str(record.topic()).encode()),
            ("partition", str(record.partition()).encode()),
            ("offset", str(record.offset()).encode()),
            *(record.headers() or []),
        ]
        producer.produce(topic, value=record.value(), key=record.key(), headers=headers)
    remaining = producer.flush(DEAD_LETTER_ACK_S)
    if remaining:
        raise DeadLetterError(f"{remaining} dead-letter record(s) not acknowledged")


def commit(consumer: ConsumerPort, heads: Mapping[tuple[str, int], int]) -> None:
    """Commit past each partition's head (a batch's highest offset), asynchronously: the
    request is queued and the broker's answer comes to ``committed``. Waiting for it held the
    Kafka thread, and the next batch's read behind it, for a broker round trip per batch.
    Each batch's effects are done before its commit is queued, and a later commit covers
    an earlier one, so a lost answer costs at most a re-read (idempotent); closing the
    consumer waits for the answers still owed."""
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o + 1) for (t, p), o in heads.items()],
            asynchronous=True,
        )
    except KafkaException as exc:  # refused before it was sent (e.g. nothing assigned)
        _commit_failed(exc)


def committed(err: KafkaError | None, partitions: list[TopicPartition]) -> None:
    """The consumer's ``on_commit``: the broker's answer to a ``commit`` (librdkafka calls
    it from within a later ``consume``)."""
    failed = [p for p in partitions if p.error is not None]
    if err is not None or failed:
        _commit_failed(err or failed[0].error, [f"{p.topic}:{p.partition}" for p in failed])


def _commit_failed(reason: object, partitions: Sequence[str] = ()) -> None:
    # Everything the batch does is done; a partition that moved away meanwhile is
    # re-read by its new owner, idempotently. Nothing to undo, nothing lost.
    metrics.CONSUMER_COMMIT_FAILURES.inc()
    where = f" ({', '.join(partitions)})" if partitions else ""
    logger.warning("commit failed%s (the batch's effects stand): %s", where, reason)
