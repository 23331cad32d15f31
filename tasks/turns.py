"""The order of batch transactions that overlap on several database connections.

``consume_events`` applies batch N+1 while batch N's writes still run, so that PostgreSQL
works on one while the other is decided in Python (issue #8: PostgreSQL waited on the
Python side for about a third of each apply). Kafka's order must still hold. It does if
each batch's transaction, told by the ``Turn`` of the batch before it:
1. begins only once the batch before holds its tasks' locks, or is over: a task both touch
   is then read as the batch before leaves it (the lock waits for its commit);
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


class BeforeFailed(Exception):
    """The batch before this one ended unapplied: this one must not be applied either."""


class Released(Exception):
    """The batch before this one rolled back; this one rolls back and waits for it."""


class _State(enum.Enum):
    PENDING = "pending"  # not begun
    LOCKED = "locked"  # an attempt holds its locks
    RELEASED = "released"  # an attempt rolled back; the batch is applied again later
    OVER = "over"  # applied, or given up (``committed``)


class Turn:
    def __init__(self, before: Turn | None) -> None:
        self._before = before
        self._changed = threading.Condition()
        self._state = _State.PENDING
        self.committed = False

    def begin(self) -> None:
        """Before BEGIN: wait until the batch before holds its locks or is over."""
        self._wait_before({_State.LOCKED, _State.OVER})

    def locked(self) -> None:
        """After the read: this attempt holds its tasks' locks."""
        self._set(_State.LOCKED)

    def may_write(self) -> None:
        """Before the writes: wait until the batch before is over (then go on if it
        committed) or has rolled back (``Released``: roll back too)."""
        if self._wait_before({_State.OVER, _State.RELEASED}) is _State.RELEASED:
            raise Released

    def release(self) -> None:
        """This attempt rolled back; the batch is applied again later."""
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
