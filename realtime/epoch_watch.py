"""The events topic's epoch, watched while ``consume_events`` runs.

Deleting the topic and creating it again under a running consumer does not always tell the
consumer. Measured with Kafka 4.4 and librdkafka 2.16: after a gap of seconds the group
rebalances, but re-created at once, the fetch position resets to the new topic's start
(out of range) with no rebalance, and a position the new topic already holds would simply be
read on. Records applied then would be logged under the old topic's epoch. So the consumer
asks Kafka for the topic's id before applying records whose offsets went back
(``realtime.ingest``, ``EventConsumer.epoch_check``), and every
TASKSTREAM_EPOCH_CHECK_SECONDS (``run``). When it changed, the process applies and commits
nothing more and exits with an error, and its supervisor starts it again on the new epoch,
where the hot store forgets the old topic (``realtime.store.HotStore.switch_epoch``;
docs/operations.md, "Re-creating the events topic").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka.admin import AdminClient

from streaming.kafka import EpochUnavailable, admin_config, topic_epoch

logger = logging.getLogger(__name__)


class TopicRecreated(Exception):
    """The events topic's id changed under a running consumer: restart it."""


class EpochWatch:
    """Compares the topic's id with the consumer's ``epoch``, one check at a time
    (``check``), or every ``interval`` seconds until it changes (``run``)."""

    def __init__(
        self,
        topic: str,
        epoch: str,
        interval: float,
        describe: Callable[..., str] = topic_epoch,
        admin: Any | None = None,
    ) -> None:
        self.topic, self.epoch, self.interval = topic, epoch, interval
        self._describe = describe
        self._admin = admin
        self.changed_to: str | None = None

    def check(self) -> bool:
        """Whether the topic still has the consumer's epoch (blocking: a thread's call).
        Kafka not answering within the interval is not a change: it is asked again."""
        if self._admin is None:
            self._admin = AdminClient(admin_config())
        try:
            current = self._describe(self.topic, timeout=self.interval, admin=self._admin)
        except EpochUnavailable as exc:
            logger.warning("cannot check the epoch of %s: %s", self.topic, exc)
            return True
        if current == self.epoch:
            return True
        self.changed_to = current
        logger.error(
            "the topic %s was re-created under this consume_events: its epoch is %s, not %s; "
            "stopping after the current batch, to be started again on the new epoch",
            self.topic, current, self.epoch,
        )  # fmt: skip
        return False

    async def run(self, on_change: Callable[[], None]) -> None:
        """Check every ``interval`` seconds, on a thread; call ``on_change`` on a change."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            if not await loop.run_in_executor(None, self.check):
                on_change()
                return
