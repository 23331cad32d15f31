"""Run the demo worker (see tasks/worker.py)."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from django.core.management.base import BaseCommand

from realtime import conf
from realtime.kafka import consumer_config, ensure_project_topics, producer_config, subscribe
from realtime.management.loop import StopFlag, recycle_db_connection
from tasks.worker import Worker, task_state_from_db

logger = logging.getLogger(__name__)


def build_worker() -> Worker:
    settings = conf.get()
    consumer = Consumer(consumer_config(settings.WORKER_GROUP))
    subscribe(consumer, [settings.TOPIC_REQUESTS])
    return Worker(
        consumer, Producer(producer_config()), settings.TOPIC_EVENTS, task_state=task_state_from_db
    )


def run_worker(flag: StopFlag) -> None:
    worker = build_worker()
    logger.info("worker started on %s", conf.get().TOPIC_REQUESTS)
    try:
        while not flag.stopped:
            worker.run_once()
            recycle_db_connection()
    finally:
        worker.close()
        logger.info("worker stopped")


class Command(BaseCommand):
    help = "Run the demo worker: execute task.requests, publish task.events."

    def handle(self, *args: Any, **options: Any) -> None:
        ensure_project_topics()
        run_worker(StopFlag().install())
