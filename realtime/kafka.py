"""Kafka client configuration in one place; clients are only ever made by callers, on demand."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from realtime import conf

logger = logging.getLogger(__name__)


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


def topic_epoch(topic: str, timeout: float = 30.0) -> str:
    """The topic's identity: its Kafka topic id, which changes when the topic is deleted
    and created again (offsets then restart). Falls back to the cluster id where the
    broker cannot describe topics."""
    admin = AdminClient({"bootstrap.servers": conf.get().require_kafka()})
    try:
        futures = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)
        topic_id = str(futures[topic].result().topic_id)
        if topic_id and topic_id != "AAAAAAAAAAAAAAAAAAAAAA":
            return _url_safe(topic_id)
    except Exception:
        logger.info("cannot describe topic %s; using the cluster id as its epoch", topic)
    return cluster_epoch(timeout)


def cluster_epoch(timeout: float = 30.0) -> str:
    """The cluster id as an epoch: librdkafka's mock cluster (the embedded mode) cannot
    describe topics, and a new mock cluster is a new cluster every run."""
    admin = AdminClient({"bootstrap.servers": conf.get().require_kafka()})
    return _url_safe(admin.list_topics(timeout=timeout).cluster_id or "unknown")


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
    admin = AdminClient({"bootstrap.servers": conf.get().require_kafka()})
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


def subscribe(consumer: Consumer, topics: list[str]) -> None:
    """Subscribe with assignment changes logged: operators (and tests) see when a process
    starts owning partitions."""

    def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("assigned %s", _describe(partitions))

    def on_revoke(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("revoked %s", _describe(partitions))

    consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke)


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}:{p.partition}" for p in partitions) or "nothing"
