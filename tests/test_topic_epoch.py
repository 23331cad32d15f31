"""``topic_epoch`` (#10): a transient failure is retried, and never turns into another epoch
(the cluster id), which would reset every client's cursor."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaException

from streaming import kafka as kafka_module
from streaming.kafka import topic_epoch


class Future:
    def __init__(self, value: Any = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class FlakyAdmin:
    """Fails ``failures`` describes (as a restarting broker does), then answers."""

    instances: list[FlakyAdmin] = []
    failures = 0

    def __init__(self, config: dict[str, Any]) -> None:
        self.describes = 0
        FlakyAdmin.instances.append(self)

    def describe_topics(self, topics: Any, request_timeout: float = 0) -> dict[str, Future]:
        self.describes += 1
        if self.describes <= FlakyAdmin.failures:
            return {"t": Future(error=KafkaException("_TRANSPORT: broker down"))}
        return {"t": Future(SimpleNamespace(topic_id="AbC+d/EfGhIjKlMnOpQrSt"))}

    def list_topics(self, timeout: float = 0) -> Any:
        return SimpleNamespace(cluster_id="TheClusterId", topics={})


@pytest.fixture(autouse=True)
def flaky_admin(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.TASKSTREAM = {**settings.TASKSTREAM, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    FlakyAdmin.instances = []
    monkeypatch.setattr(kafka_module, "AdminClient", FlakyAdmin)


def test_a_transient_describe_failure_is_retried_and_the_epoch_stays_the_topic_id() -> None:
    FlakyAdmin.failures = 2
    assert topic_epoch("t", timeout=10) == "AbC-d_EfGhIjKlMnOpQrSt"
    assert sum(a.describes for a in FlakyAdmin.instances) == 3


def test_a_describe_that_never_succeeds_fails_loudly_within_the_deadline() -> None:
    FlakyAdmin.failures = 10**6
    started = time.monotonic()
    with pytest.raises(Exception, match="cannot describe topic t"):
        epoch = topic_epoch("t", timeout=1.5)
        pytest.fail(f"returned an epoch anyway: {epoch}")
    assert time.monotonic() - started < 5
