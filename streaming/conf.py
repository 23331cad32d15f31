"""Typed access to ``settings.TASKSTREAM``, the app's one namespaced settings dict.

Read lazily and rebuilt on ``setting_changed`` so ``override_settings`` works in tests, the
way DRF's ``api_settings`` does. Nothing here creates a client.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver


@dataclass(frozen=True)
class TaskstreamSettings:
    KAFKA_BOOTSTRAP_SERVERS: str
    TOPIC_EVENTS: str
    TOPIC_REQUESTS: str
    TOPIC_DLQ: str
    TOPIC_PARTITIONS: int
    CONSUMER_GROUP: str
    WORKER_GROUP: str
    CONSUMER_INSTANCE_ID: str
    WORKER_INSTANCE_ID: str
    CONSUMER_BATCH: int
    CONSUMER_LINGER_MS: int
    EPOCH_CHECK_SECONDS: float
    HEARTBEAT_SECONDS: float
    RETRY_MS: int
    STREAM_QUEUE_SIZE: int
    OUTBOX_POLL_SECONDS: float
    AUTH_COOKIE: str
    AUTH_COOKIE_SECURE: bool
    REDIS_URL: str
    REDIS_PREFIX: str
    REPLAY_MAX_EVENTS: int
    REPLAY_TTL_SECONDS: int
    HISTORY_DAYS: int
    REPLAY_PAGE: int
    REPLAY_MAX_SCAN: int
    REPLAY_KAFKA_PER_MINUTE: int
    MAX_EVENT_BYTES: int
    MAX_STREAMS_PER_USER: int
    STREAM_OPENS_PER_MINUTE: int
    STREAM_MAX_SECONDS: float
    SEND_TIMEOUT_SECONDS: float
    DRAIN_SECONDS: float
    DRAIN_REFUSAL_STATUS: int
    CORS_ALLOWED_ORIGINS: tuple[str, ...]
    HEADER_TIMEOUT_SECONDS: float
    BODY_TIMEOUT_SECONDS: float
    METRICS_ALLOW: tuple[str, ...]
    METRICS_TOKEN: str
    OTEL_ENDPOINT: str

    def require_kafka(self) -> str:
        """Return the bootstrap servers, or fail loudly when none are configured."""
        if not self.KAFKA_BOOTSTRAP_SERVERS:
            raise ImproperlyConfigured(
                "KAFKA_BOOTSTRAP_SERVERS is not set: point it at a Kafka cluster "
                "(`scripts/services up` starts one), or use `make run` for the embedded mode"
            )
        return self.KAFKA_BOOTSTRAP_SERVERS


_cached: TaskstreamSettings | None = None


def get() -> TaskstreamSettings:
    global _cached
    if _cached is None:
        raw: dict[str, Any] = getattr(settings, "TASKSTREAM", {})
        names = {f.name for f in fields(TaskstreamSettings)}
        unknown = set(raw) - names
        missing = names - set(raw)
        if unknown or missing:
            raise ImproperlyConfigured(
                f"settings.TASKSTREAM: unknown keys {sorted(unknown)}, missing {sorted(missing)}"
            )
        _cached = TaskstreamSettings(**raw)
    return _cached


def set_kafka_bootstrap(servers: str) -> None:
    """Point every client made from now on at ``servers`` (the embedded mock cluster)."""
    settings.TASKSTREAM["KAFKA_BOOTSTRAP_SERVERS"] = servers
    reload()


def reload() -> None:
    global _cached
    _cached = None


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKSTREAM":
        reload()
