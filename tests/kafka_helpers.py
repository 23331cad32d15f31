"""Reading and writing real Kafka topics from tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streaming.kafka import producer_config


def produce(topic: str, records: Sequence[tuple[str, bytes | str | dict[str, Any]]]) -> None:
    """Write ``(key, value)`` records and wait for the broker to acknowledge them all."""
    producer = Producer(producer_config())
    for key, value in records:
        raw = json.dumps(value) if isinstance(value, dict) else value
        producer.produce(topic, key=key, value=raw)
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
