"""Resume: where a (re)connecting stream starts, and how holes are filled.

The hot store answers almost every reconnect. When it cannot prove it holds everything
after a cursor (trimmed, expired), Kafka is read instead, by the process's one shared
reader (``realtime.replay.kafka``). A cursor that no source can serve is answered with an
explicit reset, never silently (docs/events.md, "Resuming").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from realtime.admission import open_query
from realtime.replay.kafka import KafkaReplayer, Unfillable
from realtime.store import HotStore, Page, StoredEvent
from realtime.store_open import OpenView, read_open
from streaming import conf, metrics
from streaming.cursor import UNKNOWN_EPOCH, Cursor, PartitionKey

logger = logging.getLogger(__name__)
# Bound once: ``labels()`` per replay (a lock and a lookup) was ~2 % of a reconnect storm's
# server samples (py-spy, issue #9, M5).
REPLAYED_FROM_STORE = metrics.REPLAYS.labels("store")
REPLAYED_FROM_KAFKA = metrics.REPLAYS.labels("kafka")


class ResumeRefused(Exception):
    """A cursor the server answers with an HTTP error before any stream bytes."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


# What the view holds after the user's newest event in a partition: nothing, and nothing
# missing. One for every plan (never changed): a plan lasts as long as its stream.
NOTHING_AFTER = Page([], complete=True)


@dataclass(slots=True)  # kept by every open stream: no per-instance dict
class ResumePlan:
    cursor: Cursor  # deliver everything after these positions
    resumed_from: str  # for the response header: a cursor, "earliest" or "head"
    reset: dict[str, str] | None = (
        None  # the stream-reset payload, when the request was not honoured
    )
    from_earliest: bool = False  # replay whatever the store holds, even if incomplete
    # Partitions the cursor does not name: the client never received from them, so the
    # user's every event there is replayed (docs/events.md, "Resuming").
    from_start: tuple[PartitionKey, ...] = ()
    # ``?since=``: per partition, the last offset before the time. What the cursor does
    # not name is sent only past it, live too (the cursor's own offsets are past it).
    floor: dict[PartitionKey, int] = field(default_factory=dict)
    # The first replay page of partitions the replay starts at the plan's own positions
    # (read with the open's other reads), for the writer to use instead of reading it.
    pages: dict[PartitionKey, Page] = field(default_factory=dict)


async def plan_resume(
    store: HotStore,
    kafka: KafkaReplayer,
    user_id: int,
    requested: Cursor | None,
    view: OpenView | None = None,
) -> ResumePlan:
    """Where a stream resumes from ``requested``, from ``view``: what the open read from
    the store (read here when not given, without counting an open or taking a lease)."""
    settings = conf.get()
    source = settings.TOPIC_EVENTS
    if view is None:
        cursor = None if requested is None else dict(requested.offsets)
        view = await read_open(store, open_query(user_id, None, cursor))
    # Only the stream's own source: the store may remember others (a renamed topic).
    last = {k: v for k, v in view.last.items() if k[0] == source}
    head_cursor = Cursor()
    epoch = view.epoch
    for key, offset in last.items():
        head_cursor.advance(key[0], key[1], offset, epoch or UNKNOWN_EPOCH)
    # From the user's newest: the view holds nothing after its own positions.
    at_head = ResumePlan(
        head_cursor, str(head_cursor) or "head", pages=dict.fromkeys(last, NOTHING_AFTER)
    )
    if requested is None:
        return at_head

    foreign = [s for s in requested.epochs if s != source]
    if foreign:
        raise ResumeRefused(403, "source_forbidden", f"this stream cannot read {foreign[0]!r}")
    if epoch is not None and requested.epochs.get(source, epoch) != epoch:
        return _reset("epoch-changed", str(requested), epoch)
    for key, offset in requested.offsets.items():
        if offset > view.heads.get(key, -1):
            # The cursor names records nobody has consumed: not from this topic, or forged.
            at_head.reset = {
                "reason": "cursor-ahead",
                "requested": str(requested),
                "resumed_from": at_head.resumed_from,
            }
            return at_head
    # A partition the cursor does not name was never received from: the user's events
    # there are all new to the client, and are replayed from the first one (never skipped).
    unnamed = tuple(key for key in last if key not in requested.offsets)
    wanted = [*requested.offsets.items(), *((key, -1) for key in unnamed)]
    problem, _ = await _kafka_problem(store, kafka, user_id, wanted, view.pages, charged=False)
    if problem is not None:
        return _reset(problem, str(requested), epoch or requested.epochs[source])
    return ResumePlan(requested.copy(), str(requested), from_start=unnamed, pages=view.pages)


async def plan_since(
    store: HotStore, kafka: KafkaReplayer, user_id: int, since: datetime, view: OpenView
) -> ResumePlan:
    """Where a stream opened with ``?since=`` starts: in each partition, after the last
    record before ``since`` (Kafka's offsets-for-times, as ``replay_events --since``).

    The plan names the partitions the user has events in (or that the store cannot vouch
    for); ``floor`` keeps every other partition's records before ``since`` out of the live
    part too. ``Unfillable`` when Kafka cannot say where the time falls.
    """
    source = conf.get().TOPIC_EVENTS
    epoch = view.epoch or UNKNOWN_EPOCH
    requested = f"since={since.isoformat()}"
    # Finding where the time falls is a Kafka read: it counts like a replay.
    if not await kafka_budget_left(store, user_id):
        return _reset("replay-limit", requested, epoch)
    bounds = await kafka.offsets_at(source, since)
    floor = {(source, p): (b.first if b.first >= 0 else b.high) - 1 for p, b in bounds.items()}
    last = {key for key in view.last if key[0] == source}
    problem, incomplete = await _kafka_problem(
        store, kafka, user_id, list(floor.items()), {}, charged=True
    )
    if problem is not None:
        return _reset(problem, requested, epoch)
    named = [key for key in floor if key in last or key in incomplete]
    for key in named:
        b = bounds[key[1]]
        if b.first >= 0 and b.first == b.low > 0:
            # Retention deleted records just before the first one kept, which is already
            # at or after the time: some of the deleted ones may have been too.
            return _reset("cursor-expired", requested, epoch)
    cursor = Cursor(epochs={source: epoch})
    for key in named:
        if floor[key] >= 0:
            cursor.advance(*key, floor[key], epoch)
    from_start = tuple(key for key in named if floor[key] < 0)
    resumed_from = str(cursor) or ("earliest" if from_start else "head")
    return ResumePlan(cursor, resumed_from, from_start=from_start, floor=floor)


async def _kafka_problem(
    store: HotStore,
    kafka: KafkaReplayer,
    user_id: int,
    wanted: list[tuple[PartitionKey, int]],
    pages: dict[PartitionKey, Page],
    *,
    charged: bool,
) -> tuple[str | None, set[PartitionKey]]:
    """Whether the user's events after each ``(partition, offset)`` can be replayed: the
    reset reason when Kafka must serve a range the store lost and cannot (or the user's
    Kafka replays are used up; ``charged``: this open already counted one), and the
    partitions the store could not serve alone. ``pages``: the first page after each
    offset, where the open already read it."""
    incomplete: set[PartitionKey] = set()
    for key, offset in wanted:
        page = pages.get(key)
        if page is None:
            page = await store.read_after(user_id, key, offset, 1)
        if page.complete:
            continue
        incomplete.add(key)
        # The store lost part of the range: Kafka must serve it, if it still can, and if
        # this user has not used up their Kafka replays (each may scan up to
        # TASKSTREAM_REPLAY_MAX_SCAN records on the node's one reader).
        if not charged:
            charged = True
            if not await kafka_budget_left(store, user_id):
                return "replay-limit", incomplete
        until = page.events[0].offset if page.events else None
        problem = await kafka.check(key, offset, until)
        if problem is not None:
            return problem, incomplete
    return None, incomplete


async def kafka_budget_left(store: HotStore, user_id: int) -> bool:
    """Count one Kafka replay of ``user_id``; False past TASKSTREAM_REPLAY_KAFKA_PER_MINUTE."""
    used = await store.count_hit(f"kafka-replay:{user_id}", 60)
    return used <= conf.get().REPLAY_KAFKA_PER_MINUTE


def _reset(reason: str, requested: str, epoch: str) -> ResumePlan:
    plan = ResumePlan(
        Cursor(epochs={conf.get().TOPIC_EVENTS: epoch}), "earliest", from_earliest=True
    )
    plan.reset = {"reason": reason, "requested": requested, "resumed_from": "earliest"}
    return plan


async def backfill(
    store: HotStore,
    kafka: KafkaReplayer,
    user_id: int,
    key: PartitionKey,
    after: int,
    before: int | None = None,
    *,
    accept_incomplete: bool = False,
    charge: bool = True,
    first: Page | None = None,
) -> list[StoredEvent]:
    """The user's events in ``key`` with ``after < offset < before``, in order.

    Raises ``Unfillable`` when the hot store is incomplete there and Kafka no longer has
    (or may not scan) the range, or the user's Kafka replays are used up (``charge``: the
    replay a plan already paid for passes False). ``first``: the first page after
    ``after``, already read (the open's).
    """
    page_size = conf.get().REPLAY_PAGE
    page = first if first is not None else await store.read_after(user_id, key, after, page_size)
    events: list[StoredEvent] = []
    if not page.complete and not accept_incomplete:
        until = page.events[0].offset if page.events else before
        if charge and not await kafka_budget_left(store, user_id):
            raise Unfillable("replay-limit")
        epoch = await store.epoch(key[0])
        events.extend(await kafka.read(user_id, key, after, until, epoch))
        REPLAYED_FROM_KAFKA.inc()
    else:
        REPLAYED_FROM_STORE.inc()
    while True:
        fresh = [e for e in page.events if before is None or e.offset < before]
        events.extend(e for e in fresh if not events or e.offset > events[-1].offset)
        if len(page.events) < page_size or (before is not None and len(fresh) < len(page.events)):
            return events
        page = await store.read_after(user_id, key, page.events[-1].offset, page_size)
