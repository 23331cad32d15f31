"""A stream's inbox (``Subscriber``): what the hub (realtime.hub) offers one stream, held until
its writer (realtime.writer) takes it. Bounded by items; a stream over its bound is closed,
never thinned, so its client resumes from its last id."""

from __future__ import annotations

import asyncio

from realtime.bus import BusItem
from realtime.runs import Run
from realtime.wakes import Wakes, wakes_of
from streaming import metrics


class Subscriber:
    """One stream's inbox: runs of bus items (realtime.runs) in arrival order, bounded by
    the number of items. The stream itself drops positions it already sent and fills holes
    (realtime.stream), so this stays dumb.

    The writer waits with ``waiter`` and takes with ``take`` (``next_runs`` is the two in
    one). Per wait only its future is made, no coroutine and no new list: what a stream
    holds across a wait is traversed by every young collection made meanwhile (in M1, with
    1,000 streams waiting, each gen-0 collection found ~2,000 such objects; #9). An offer
    wakes the stream a few milliseconds later, with the loop's others (realtime.wakes).
    """

    __slots__ = (
        "_due",
        "_timer",
        "_waiter",
        "_wake_due",
        "_wakes",
        "closed_reason",
        "limit",
        "loop",
        "queued",
        "runs",
        "sending_since",
        "user_id",
        "writer",
    )

    def __init__(self, user_id: int | None, limit: int) -> None:
        # None: a watcher (staff stream), offered every user's items.
        self.user_id = user_id
        self.limit = limit
        # A list and a future per wait, not a deque and an asyncio.Event: each of those
        # holds a deque of its own, 1.4 KiB of an idle stream's footprint (tracemalloc).
        self.runs: list[Run] = []
        self.queued = 0  # items in ``runs``
        self._waiter: asyncio.Future[None] | None = None  # the current (or last) wait's
        self.closed_reason: str | None = None
        # Set by the stream around each write (monotonic time; 0.0 when not writing),
        # so the hub's watchdog can cut a client that stopped reading.
        self.sending_since = 0.0
        self.writer: asyncio.Task[None] | None = None
        # The idle wake-up: one timer per stream, moved only when a wait must end sooner
        # than it fires (``waiter``), not one timer per wait.
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # Looked up at the first wait, then kept: get_running_loop() costs a getpid() call
        # (its fork check), 3 % of a fan-out's samples when done per wait.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wakes: Wakes | None = None  # the loop's, set with it
        self._wake_due = False  # an offer's deferred wake is pending

    def offer(self, runs: list[Run], count: int) -> None:
        """Queue ``runs`` (``count`` items in all), shared with the user's other streams."""
        if self.closed_reason is not None:
            return
        if self.queued + count > self.limit:
            # Never thin a stream: end it, and let the client resume from its last id.
            metrics.STREAM_OVERFLOWS.inc()
            self.close("overflow")
            return
        self.runs.extend(runs)
        self.queued += count
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self.queued * 2 > self.limit:
            # Half full: now, not after the linger. The layer hands the hub a backlog's
            # messages back to back (realtime.layer), and the hub lets the loop run between
            # them: a writer woken now takes this before the next one can overflow it.
            self.wake()
        elif not self._wake_due:
            assert self._wakes is not None and self.loop is not None  # set by the first wait
            self._wake_due = True
            self._wakes.defer(self, self.loop)

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
        self.wake()

    def wake(self) -> None:
        """End the current wait, if any (a wake with no wait is moot: the writer looks at
        what is queued before it waits). A wait that ended otherwise (the writer was
        cancelled) left a done future here: nothing to do."""
        self._wake_due = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_if_due(self) -> None:
        """An offer's deferred wake: moot if the stream was woken since (closed, timed out)."""
        if self._wake_due:
            self.wake()

    def waiter(self, wait: float) -> asyncio.Future[None] | None:
        """None if there is something to ``take`` (or the stream is closed); else a future
        that ends when there is, or after ``wait`` seconds. A plain method, not a coroutine:
        the writer awaits the future itself, so a wake makes no coroutine object."""
        if self.runs or self.closed_reason is not None:
            return None
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
            self._wakes = wakes_of(loop)
        # Neither wait_for (a task per wake, a quarter of a busy server's CPU) nor a timer
        # per wait (a handle made and cancelled per delivery at low rates,
        # docs/benchmarks.md): the stream's one timer, re-armed only when it fires early.
        self._due = due = loop.time() + wait
        timer = self._timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(due, self._time_up)
        self._waiter = waiter = loop.create_future()
        return waiter

    def take(self) -> list[Run]:
        """All the runs queued (maybe none), in order, as a copy: the inbox list is kept."""
        runs = self.runs.copy()
        self.runs.clear()
        self.queued = 0
        return runs

    async def next_runs(self, wait: float) -> list[Run]:
        """Wait up to ``wait`` seconds for items; return all the runs queued (maybe none)."""
        waiter = self.waiter(wait)
        if waiter is not None:
            await waiter
        return self.take()

    async def next_items(self, wait: float) -> list[BusItem]:
        """``next_runs``, item by item."""
        return [item for run in await self.next_runs(wait) for item in run.items]

    def _time_up(self) -> None:
        loop = self.loop
        assert loop is not None  # set by the wait that armed this timer
        # The loop may run a timer up to its clock resolution early: that counts as due.
        if loop.time() + 0.001 >= self._due:
            self._timer = None
            self.wake()
        else:  # the current wait began after this timer was set: it ends later
            self._timer = loop.call_at(self._due, self._time_up)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
