"""History retention: what ``manage.py prune_history`` deletes, and the one rule for when.

Three tables grow with use: the event log (a row per event applied), the dead-letter ledger
(a row per dead-lettered record read by ``redrive_dead_letters``) and the outbox (a row per
task command). Left alone they grow forever, and the event log's unique index on random
event ids makes every batch's INSERT slower once it outgrows memory (bench/run.py empties
the log before each run for that reason).

A row goes once it is older than ``TASKSTREAM_HISTORY_DAYS`` and nothing can need it again:

- **an event-log row** is needed while Kafka holds its record in the topic's current epoch:
  a stream's Kafka replay and ``replay_events`` decide delivery by it (``tasks.delivery``),
  and ``consume_events`` may read again what it has not committed. Below its partition's
  low watermark, in an epoch the topic no longer has (it was re-created), or in a topic that
  no longer exists, no path reads the record again. A blank epoch (rows logged before
  tasks/migrations/0007) counts as the current one.
- **a dead-letter ledger row** is needed while the dead-letter topic holds its record: the
  ledger is what says a record was redriven already.
- **an outbox row** is needed until it is sent, or, when Kafka refused it, until its
  task's ``task.failed`` event is (``tasks.outbox``).

Kafka is asked, never guessed: a topic Kafka does not answer for keeps every row this pass
(``Pruned.skipped``; the command then exits with an error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from django.db.models import Model, Q, QuerySet
from django.utils import timezone

from streaming import conf, metrics
from streaming.kafka import EpochUnavailable, RangeReader, topic_epoch
from tasks.models import DeadLetter, OutboxMessage, TaskEventLog

logger = logging.getLogger(__name__)

# Rows read, decided and deleted per statement: small enough for SQLite's limit on
# parameters and for short locks, large enough that a big backlog goes in few round trips.
CHUNK = 2000


class KafkaUnanswered(Exception):
    """Kafka did not say what a topic holds (down, or the request timed out)."""


@dataclass(frozen=True)
class TopicHolds:
    """What a topic still holds: its epoch and, per partition, the offsets of its records
    (from the earliest kept up to, not including, the next one to be written)."""

    epoch: str
    spans: dict[int, tuple[int, int]]

    def holds(self, partition: int, offset: int, epoch: str | None = None) -> bool:
        """Whether the record at ``partition``/``offset`` (logged in ``epoch``; None: the
        ledger, which records none) can still be read. An offset at or past the end is a
        record of the topic before it was re-created (the ledger's rows have no epoch)."""
        if epoch not in (None, "", self.epoch):
            return False
        span = self.spans.get(partition)
        return span is not None and span[0] <= offset < span[1]


# None: the topic does not exist, so it holds nothing.
Holdings = Callable[[str], TopicHolds | None]


class KafkaHoldings:
    """``TopicHolds`` of a topic, asked of the cluster. A project topic (events, requests,
    dead letters) that the cluster does not list is not taken as gone: consume_events creates
    them, and a broker restarting can answer without them for a moment. Only another topic
    (a renamed events topic's old name) is."""

    def __init__(self, reader: RangeReader | None = None, timeout: float = 10.0) -> None:
        self.reader = reader or RangeReader("prune-history", timeout=timeout)
        self.timeout = timeout
        settings = conf.get()
        self.project = {settings.TOPIC_EVENTS, settings.TOPIC_REQUESTS, settings.TOPIC_DLQ}

    def __call__(self, topic: str) -> TopicHolds | None:
        try:
            metadata = self.reader.consumer.list_topics(topic, timeout=self.timeout)
            found = metadata.topics.get(topic)
            if found is None or (
                found.error is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            ):
                if topic in self.project:
                    raise KafkaUnanswered(f"{topic}: not listed by the cluster")
                return None
            if found.error is not None:
                raise KafkaUnanswered(f"{topic}: {found.error}")
            epoch = topic_epoch(topic, timeout=self.timeout)
            spans = {p: self.reader.watermarks(topic, p) for p in sorted(found.partitions)}
        except (KafkaException, EpochUnavailable) as exc:
            raise KafkaUnanswered(f"{topic}: {exc}") from exc
        return TopicHolds(epoch, spans)

    def close(self) -> None:
        self.reader.close()


@dataclass
class Pruned:
    """One pass: rows deleted per table, and the topics whose rows were all kept."""

    log: int = 0
    dead_letters: int = 0
    outbox: int = 0
    skipped: list[str] = field(default_factory=list)


class _Asked:
    """One pass's answers from Kafka, each topic asked once; a topic it did not answer for
    keeps its rows."""

    def __init__(self, holdings: Holdings) -> None:
        self.holdings = holdings
        self.known: dict[str, TopicHolds | None] = {}
        self.unanswered: dict[str, str] = {}

    def gone(self, topic: str, partition: int, offset: int, epoch: str | None = None) -> bool:
        """Whether no path can read the record again (False: kept, also when unanswered)."""
        if topic in self.unanswered:
            return False
        try:
            if topic not in self.known:
                self.known[topic] = self.holdings(topic)
        except KafkaUnanswered as exc:
            self.unanswered[topic] = str(exc)
            logger.warning("prune_history: keeping every row of %s this pass (%s)", topic, exc)
            return False
        held = self.known[topic]
        return held is None or not held.holds(partition, offset, epoch)


class HistoryPruner:
    """``run_once`` is one pass over the three tables; the command repeats it."""

    def __init__(
        self,
        holdings: Holdings,
        *,
        days: int | None = None,
        now: Callable[[], datetime] = timezone.now,
        chunk: int = CHUNK,
        dry_run: bool = False,
    ) -> None:
        self.holdings = holdings
        # Count what a pass would delete, and delete nothing (the counts are the same).
        self.dry_run = dry_run
        self.days = conf.get().HISTORY_DAYS if days is None else days
        self.now = now
        self.chunk = chunk

    def run_once(self) -> Pruned:
        cutoff = self.now() - timedelta(days=self.days)
        pruned = Pruned()
        kafka = _Asked(self.holdings)
        # The log is read oldest first, and the pass ends at its first row young enough to
        # keep: ids follow applied_at (to within a batch), so no index on the time is needed.
        pruned.log = self._sweep(
            TaskEventLog.objects.all(),
            ("source", "partition", "offset", "epoch", "applied_at"),
            lambda row: kafka.gone(*row[1:5]),
            stop=lambda row: row[-1] >= cutoff,
        )
        pruned.dead_letters = self._sweep(
            DeadLetter.objects.filter(dead_at__lt=cutoff),
            ("dlq_topic", "dlq_partition", "dlq_offset"),
            lambda row: kafka.gone(*row[1:4]),
        )
        reported = Q(failure_event_id__isnull=True) | Q(failure_reported_at__isnull=False)
        done = Q(sent_at__lt=cutoff) | (Q(failed_at__lt=cutoff) & reported)
        pruned.outbox = self._sweep(OutboxMessage.objects.filter(done), (), lambda row: True)
        pruned.skipped = sorted(kafka.unanswered)
        if not self.dry_run:
            for table, count in (
                ("event_log", pruned.log),
                ("dead_letters", pruned.dead_letters),
                ("outbox", pruned.outbox),
            ):
                metrics.HISTORY_PRUNED.labels(table).inc(count)
            metrics.HISTORY_SKIPPED.inc(len(pruned.skipped))
        logger.info(
            "history %s: %d event-log rows, %d dead letters, %d outbox rows older than %s%s",
            "would be pruned (dry run)" if self.dry_run else "pruned",
            pruned.log,
            pruned.dead_letters,
            pruned.outbox,
            cutoff.isoformat(),
            f"; kept every row of {', '.join(pruned.skipped)}" if pruned.skipped else "",
        )
        return pruned

    def _sweep(
        self,
        rows: QuerySet[Any],
        columns: tuple[str, ...],
        gone: Callable[[tuple[Any, ...]], bool],
        stop: Callable[[tuple[Any, ...]], bool] | None = None,
    ) -> int:
        """Delete the ``rows`` that are ``gone`` in id order, a chunk per statement, until
        the first row that is ``stop`` (kept, like every row after it)."""
        model: type[Model] = rows.model
        deleted, after = 0, None
        while True:
            page = rows if after is None else rows.filter(pk__gt=after)
            chunk = list(page.order_by("pk").values_list("pk", *columns)[: self.chunk])
            ended = len(chunk) < self.chunk
            doomed = []
            for row in chunk:
                if stop is not None and stop(row):
                    ended = True
                    break
                if gone(row):
                    doomed.append(row[0])
            if doomed and self.dry_run:
                deleted += len(doomed)
            elif doomed:
                deleted += model._default_manager.filter(pk__in=doomed).delete()[0]
            if ended:
                return deleted
            after = chunk[-1][0]
