"""The order of batch transactions that overlap on several database connections.

``consume_events`` applies batch N+1 while batch N's writes still run, so that PostgreSQL
works on one while the other is decided in Python (issue #8: PostgreSQL waited on the
Python side for about a third of each apply). Kafka's order must still hold. It does if
each batch's transaction, told by the ``Turn`` of the batch before it:
1. begins only once the batch before holds its tasks' locks, or is over. It does not wait
   for those locks: it takes those tasks as the batch before decided them (``decided``,
   ``before_decided``), and checks before its writes, holding their locks, that each is
   still the row version that batch left (else it is applied again alone). It never locks
   a task of the batch before (``before_tasks``), only takes it: that batch locks some of
   its tasks after this one began (those it took from its own before, at its writes; those
   another transaction held, once it let go), and a later batch holding one would wait for
   it to commit while it waits for the lock: a deadlock PostgreSQL cannot see;
2. writes only once the batch before committed: its INSERT can then never hold up the one
   before on a unique index (the same event id in both), and commits keep Kafka's order;
3. rolls back if the batch before rolled back to be applied again (a logged event, a
   refusal to bisect): it waits until that batch is over, then begins again. Its locks
   would otherwise hold up the batch before, which waits for nothing after it;
4. commits nothing if the batch before ended unapplied (an outage): ``BeforeFailed``.

A batch waits only on the one before, never on a later one, and locks are taken in task id
order: no cycle. ``tasks.apply`` calls the turn in the database thread; the caller ends it
(``end``) once the batch is applied, however many attempts that took, or given up.
"""

from __future__ import annotations

import enum
import threading
from typing import Any


class BeforeFailed(Exception):
    """The batch before this one ended unapplied: this one must not be applied either."""


class Released(Exception):
    """The batch before this one rolled back; this one rolls back and waits for it."""


class _State(enum.Enum):
    PENDING = "pending"  # not begun
    LOCKED = "locked"  # an attempt holds its locks
    DECIDED = "decided"  # ... and has decided its tasks' new rows (``rows``)
    RELEASED = "released"  # an attempt rolled back; the batch is applied again later
    OVER = "over"  # applied, or given up (``committed``)


class Turn:
    def __init__(self, before: Turn | None) -> None:
        self._before = before
        self._changed = threading.Condition()
        self._state = _State.PENDING
        self.committed = False
        # Once DECIDED: the attempt's tasks as it will leave them (by id), and the row
        # version (``xmin``) each will have once it commits.
        self._rows: dict[str, Any] = {}
        self._versions: dict[str, str] = {}
        # Once LOCKED: the batch's tasks (ids), locked by it or to be.
        self._tasks: frozenset[str] = frozenset()

    def begin(self) -> None:
        """Before BEGIN: wait until the batch before holds its locks or is over."""
        self._wait_before({_State.LOCKED, _State.DECIDED, _State.OVER})

    def before_tasks(self) -> frozenset[str]:
        """After ``begin``: the tasks of the batch before, while it runs. This attempt must
        not lock them (module docstring, 1)."""
        before = self._before
        if before is None:
            return frozenset()
        with before._changed:
            return before._tasks

    def locked(self, tasks: frozenset[str]) -> None:
        """After the read: this attempt holds the locks it could take of ``tasks``."""
        with self._changed:
            self._tasks = tasks
        self._set(_State.LOCKED)

    def decided(self, rows: dict[str, Any], versions: dict[str, str]) -> None:
        """This attempt's tasks as it will write them, and their row versions after."""
        with self._changed:
            self._rows, self._versions = rows, versions
        self._set(_State.DECIDED)

    def before_decided(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The batch before's decided tasks and versions, once it has decided (nothing if
        it is over: its rows are then in the database); ``Released`` if it rolled back."""
        before = self._before
        if before is None:
            return {}, {}
        with before._changed:
            states = {_State.DECIDED, _State.OVER, _State.RELEASED}
            before._changed.wait_for(lambda: before._state in states)
            if before._state is _State.RELEASED:
                raise Released
            if before._state is _State.OVER and not before.committed:
                raise BeforeFailed
            return before._rows, before._versions

    def may_write(self) -> None:
        """Before the writes: wait until the batch before is over (then go on if it
        committed) or has rolled back (``Released``: roll back too)."""
        if self._wait_before({_State.OVER, _State.RELEASED}) is _State.RELEASED:
            raise Released

    def release(self) -> None:
        """This attempt rolled back; the batch is applied again later."""
        with self._changed:
            self._rows, self._versions, self._tasks = {}, {}, frozenset()
        self._set(_State.RELEASED)

    def wait_before(self) -> None:
        """Until the batch before is over (``BeforeFailed`` if it ended unapplied)."""
        self._wait_before({_State.OVER})

    def end(self, *, committed: bool) -> None:
        """The batch is applied (``committed``) or given up. The first call counts: every
        way out of a batch's apply ends its turn, or the batch after waits forever."""
        with self._changed:
            if self._state is _State.OVER:
                return
            self.committed = committed
            self._before = None  # a chain of turns must not keep every batch alive
            self._rows, self._versions = {}, {}  # in the database now, or never
            self._tasks = frozenset()
            self._state = _State.OVER
            self._changed.notify_all()

    def _set(self, state: _State) -> None:
        with self._changed:
            if self._state is not _State.OVER:
                self._state = state
                self._changed.notify_all()

    def _wait_before(self, states: set[_State]) -> _State:
        before = self._before
        if before is None:
            return _State.OVER
        with before._changed:
            before._changed.wait_for(lambda: before._state in states)
            state = before._state
            if state is _State.OVER and not before.committed:
                raise BeforeFailed
        return state
