"""Run the outbox relay (see tasks/outbox.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Producer
from django.core.management.base import BaseCommand

from realtime import conf
from realtime.kafka import producer_config
from realtime.management.loop import StopFlag, recycle_db_connection
from tasks.outbox import OutboxRelay

logger = logging.getLogger(__name__)


def run_relay(flag: StopFlag) -> None:
    relay = OutboxRelay(Producer(producer_config()))
    poll = conf.get().OUTBOX_POLL_SECONDS
    logger.info("outbox relay started")
    try:
        while not flag.stopped:
            if relay.run_once(wait=poll) == 0 and not relay.in_flight:
                time.sleep(poll)
            recycle_db_connection()
    finally:
        relay.close()
        logger.info("outbox relay stopped")


class Command(BaseCommand):
    # No topic check at start: the relay must run while Kafka is down; that is its job.
    help = "Deliver pending outbox rows (task commands) to Kafka."

    def handle(self, *args: Any, **options: Any) -> None:
        run_relay(StopFlag().install())
