"""Reading and writing real Kafka topics from tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streaming.kafka import (
    EpochUnavailable,
    admin_config,
    ensure_topics,
    producer_config,
    topic_epoch,
)
from tests.sse import wait_until


def produce(
    topic: str,
    records: Sequence[tuple[str, bytes | str | dict[str, Any]]],
    *,
    partition: int | None = None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    """Write ``(key, value)`` records (into ``partition`` if given, with ``headers`` if
    given) and wait for the broker to acknowledge them all."""
    producer = Producer(producer_config())
    extra: dict[str, Any] = {} if partition is None else {"partition": partition}
    for key, value in records:
        raw = json.dumps(value) if isinstance(value, dict) else value
        producer.produce(topic, key=key, value=raw, headers=headers, **extra)
    assert producer.flush(30) == 0, "records not acknowledged"


def read_all(topic: str, bootstrap: str) -> list[Any]:
    """Every record now in ``topic``, read by a throwaway consumer up to the high watermark."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions)
        ends = {}
        assignment = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low))
        consumer.assign(assignment)
        records: list[Any] = []
        done: set[int] = set()
        deadline = time.monotonic() + 30
        while len(done) < len(ends):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for message in consumer.consume(500, 1.0):
                if message.error():
                    continue
                records.append(message)
                offset, partition = message.offset(), message.partition()
                assert offset is not None and partition is not None
                if offset + 1 >= ends[partition]:
                    done.add(partition)
        return records
    finally:
        consumer.close()


def delete_topics_named(fragment: str, timeout: float = 30.0) -> list[str]:
    """Delete every topic whose name holds ``fragment``, and wait until Kafka has taken each
    deletion (``delete_topics`` alone only queues the request: a client dropped right after
    it may never send it, and the topic stays on the broker for good)."""
    admin = AdminClient(admin_config())
    names = sorted(t for t in admin.list_topics(timeout=timeout).topics if fragment in t)
    if names:
        for future in admin.delete_topics(names, request_timeout=timeout).values():
            try:
                future.result()
            except Exception as exc:  # deleted meanwhile (a test's own teardown) is fine
                if "UNKNOWN_TOPIC" not in str(exc):
                    raise
    return names


def recreate(topic: str, old_epoch: str, partitions: int = 3) -> str:
    """Delete ``topic`` and create it again; its new epoch (Kafka finishes a deletion in the
    background: creating it meanwhile fails, and is tried again)."""
    admin = AdminClient(admin_config())
    for future in admin.delete_topics([topic]).values():
        future.result()
    new: list[str] = []

    def created() -> bool:
        try:
            ensure_topics([topic], partitions=partitions, timeout=5)
            new.append(topic_epoch(topic, timeout=5, admin=admin))
        except (EpochUnavailable, Exception):
            return False
        return new[-1] != old_epoch

    wait_until(created, 60, f"{topic} created again")
    return new[-1]
