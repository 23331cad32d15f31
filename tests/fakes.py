"""Fakes at the broker edge only: a Kafka message, consumer and producer in memory.

They implement the few confluent-kafka methods our loops call, so the loops' logic can be
driven one step at a time without a broker. Everything above the edge stays real.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streaming.events import Position, TaskEvent


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _headers: list[tuple[str, bytes]] | None = None

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


@dataclass
class FakeConsumer:
    batches: list[list[FakeMessage]] = field(default_factory=list)
    commits: list[list[tuple[str, int, int]]] = field(default_factory=list)
    seeks: list[tuple[str, int, int]] = field(default_factory=list)
    closed: bool = False
    log: list[str] = field(default_factory=list)
    reachable: bool = True  # whether list_topics (a broker) answers

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        return self.batches.pop(0) if self.batches else []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        self.log.append("commit")
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        return offsets

    def seek(self, partition: TopicPartition) -> None:
        self.log.append("seek")
        self.seeks.append((partition.topic, partition.partition, partition.offset))

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> None:
        if not self.reachable:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeProducer:
    produced: list[dict[str, Any]] = field(default_factory=list)
    unacked_on_flush: int = 0
    log: list[str] = field(default_factory=list)

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        self.produced.append({"topic": topic, "value": value, "key": key, **kwargs})
        callback = kwargs.get("on_delivery")
        if callback is not None and not self.unacked_on_flush:
            callback(None, None)

    def flush(self, timeout: float = -1) -> int:
        self.log.append("flush")
        return self.unacked_on_flush

    def poll(self, timeout: float = -1) -> int:
        return 0


def event_value(
    *,
    user_id: Any,
    task_id: str,
    event_type: Any = "task.progress",
    data: Any = None,
    event_id: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A valid record value per docs/events.md; ``overrides`` break it on purpose."""
    value: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "user_id": user_id,
        "task_id": task_id,
        "scope": "user",
        "data": {"progress": 10, "message": "m"} if data is None else data,
    }
    value.update(overrides)
    return value


def record(
    value: dict[str, Any] | bytes,
    *,
    offset: int,
    partition: int = 0,
    topic: str = "task.events",
    key: bytes | None = None,
) -> FakeMessage:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    if key is None and isinstance(value, dict) and "user_id" in value:
        key = str(value["user_id"]).encode()
    return FakeMessage(topic, partition, offset, raw, key)


def task_event(user_id: int, offset: int, partition: int = 0) -> TaskEvent:
    """A validated event at ``task.events:{partition}:{offset}``, as the adapter makes."""
    return TaskEvent(
        event_id=str(uuid.uuid4()),
        event_type="task.progress",
        version=1,
        occurred_at=datetime.now(UTC),
        user_id=user_id,
        task_id=str(uuid.uuid4()),
        scope="user",
        data={"progress": 1, "message": str(offset)},
        position=Position("task.events", partition, offset),
    )
