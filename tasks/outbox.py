"""The outbox relay: produces pending ``OutboxMessage`` rows to Kafka, in id order.

A request only writes a row (in the same transaction as the task), so it never waits for
Kafka. The relay keeps a row until the broker acknowledges it: while Kafka is down rows
wait, and they go out once it is back. Delivery is at least once (a crash between the ack
and marking the row re-sends it); the worker ignores requests for finished tasks.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer
from django.db import connection, transaction
from django.utils import timezone

from streaming import conf, metrics
from streaming.kafka import producer_config
from streaming.loop import StopFlag, run_loop
from tasks.models import OutboxMessage

logger = logging.getLogger(__name__)


@dataclass
class OutboxRelay:
    producer: Producer
    batch_size: int = 200
    # Rows handed to the producer and not yet acknowledged or failed: never produced twice
    # while librdkafka is still retrying them.
    in_flight: set[int] = field(default_factory=set)
    delivered: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)

    def run_once(self, wait: float = 0.2) -> int:
        """Hand new rows to the producer, wait up to ``wait`` for acks, record the results.

        Returns the number of rows marked sent.
        """
        rows = list(
            OutboxMessage.objects.filter(sent_at__isnull=True)
            .exclude(id__in=self.in_flight)
            .order_by("id")[: self.batch_size]
        )
        for row in rows:
            self.in_flight.add(row.id)
            self.producer.produce(
                row.topic,
                key=row.key,
                value=json.dumps(row.value),
                on_delivery=self._callback(row.id),
            )
        self.producer.poll(wait)
        return self._record_results()

    def _callback(self, row_id: int) -> Any:
        def on_delivery(err: Any, _msg: Any) -> None:
            self.in_flight.discard(row_id)
            if err is None:
                self.delivered.append(row_id)
            else:
                self.failed[row_id] = str(err)

        return on_delivery

    def _record_results(self) -> int:
        delivered, self.delivered = self.delivered, []
        failed, self.failed = self.failed, {}
        if not delivered and not failed:
            return 0
        with transaction.atomic():
            if delivered:
                OutboxMessage.objects.filter(id__in=delivered).update(sent_at=timezone.now())
            for row_id, reason in failed.items():
                logger.warning("outbox row %s not delivered (will retry): %s", row_id, reason)
                row = OutboxMessage.objects.filter(id=row_id).first()
                if row is not None:
                    row.attempts += 1
                    row.last_error = reason[:2000]
                    row.save(update_fields=["attempts", "last_error"])
        metrics.OUTBOX_SENT.inc(len(delivered))
        metrics.OUTBOX_FAILED.inc(len(failed))
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
        return len(delivered)

    def close(self, timeout: float = 10.0) -> None:
        self.producer.flush(timeout)
        self._record_results()


def run_relay(flag: StopFlag) -> None:
    """The relay process: ``run_once`` until ``flag`` is set (``manage.py relay_outbox``)."""
    relay = OutboxRelay(Producer(producer_config()))
    poll = conf.get().OUTBOX_POLL_SECONDS

    def step() -> None:
        if relay.run_once(wait=poll) == 0 and not relay.in_flight:
            time.sleep(poll)

    run_loop("outbox relay", flag, step, relay.close)
