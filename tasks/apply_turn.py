"""A batch's first attempt at being applied in its turn (``tasks.turns``): the statements of
``tasks.apply`` on PostgreSQL, overlapping the batch before's transaction.

Consecutive batches share most of their tasks (a task reports progress many times), so
waiting for the batch before's task locks would run the two transactions one after the
other. Instead the read skips the tasks another transaction holds and takes those the
batch before holds as it decided them. Before writing, once the batch before committed,
the attempt locks those tasks and checks that each is still the version that batch left
(``xmin``): anything else (an API call, the admin) changed it meanwhile, and the attempt
gives way (``Stale``) to be applied again alone. The attempt assumes the batch is new, as
``apply_events`` first does: anything that would retry or fail releases the turn and
raises, and the caller (``realtime.applier``) applies the batch again without a turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from streaming.events import TaskEvent
from tasks import postgres
from tasks.apply import TASK_COLUMNS, Applied, PostgresBatch, TaskRow, apply_with, task_rows
from tasks.turns import BeforeFailed, Released, Turn

_VERSIONED = [*TASK_COLUMNS, "version"]
NewLogs = list[tuple[TaskRow, TaskEvent, bool]]  # (task, event, whether it moved the task)


class Stale(Exception):
    """A task taken from the batch before changed before this batch could write it."""


def apply_in_turn(events: Sequence[TaskEvent], epoch: str, turn: Turn) -> list[Applied]:
    """Apply ``events`` in ``turn``; return one outcome per event, in order."""
    while True:
        try:
            return apply_with(events, epoch, _TurnBatch(turn))
        except Released:  # so this one's locks cannot hold up the batch before's retry
            turn.release()
            turn.wait_before()
        except BeforeFailed:
            raise
        except BaseException:
            turn.release()
            raise


class _TurnBatch(PostgresBatch):
    def __init__(self, turn: Turn) -> None:
        super().__init__(look_up=False)
        self._turn = turn
        self._tasks: dict[str, TaskRow] = {}
        self._versions: dict[str, str] = {}  # of the tasks this attempt locked
        self._taken: dict[str, str] = {}  # of the tasks taken from the batch before
        self._version = ""  # the version the rows this attempt writes will have

    def read(
        self, task_ids: list[str], events: Sequence[TaskEvent], epoch: str
    ) -> tuple[dict[str, TaskRow], list[tuple[Any, ...]]]:
        self._turn.begin()
        # The batch before's tasks are only ever taken from it, never locked here: it may
        # lock some of them after this read (tasks.turns, 1).
        theirs = self._turn.before_tasks()
        mine = [t for t in task_ids if t not in theirs]
        locked = postgres.locked_tasks(mine, TASK_COLUMNS, versions=True, skip_locked=True)
        rows, ((self._version,),) = self._tx.read(locked, postgres.current_version())
        self._keep(rows)
        self._turn.locked(frozenset(task_ids))
        missing = [t for t in task_ids if t not in self._tasks]
        if missing:
            before, versions = self._turn.before_decided()
            for task_id in missing:
                if task_id in before:
                    # A copy: the batch before may be writing its own right now.
                    self._tasks[task_id] = dataclasses.replace(before[task_id])
                    self._taken[task_id] = versions[task_id]
            # Held by another transaction, or not there: read as any batch does.
            rest = [t for t in missing if t not in self._taken]
            if rest:
                locked = postgres.locked_tasks(rest, TASK_COLUMNS, versions=True)
                (rows,) = self._tx.read(locked, begin=False)
                self._keep(rows)
        return self._tasks, []

    def _keep(self, fetched: list[tuple[Any, ...]]) -> None:
        rows = postgres.task_rows(fetched, _VERSIONED)
        self._tasks.update(task_rows([row[:-1] for row in rows]))
        self._versions.update((str(row[0]), row[-1]) for row in rows)

    def write(self, new_logs: NewLogs, changed: list[TaskRow], now: datetime, epoch: str) -> None:
        """Tell the batch after what this one decided, wait for the batch before's commit,
        check the tasks taken from it, then write and commit."""
        after = {**self._versions, **self._taken, **{str(t.id): self._version for t in changed}}
        self._turn.decided(self._tasks, after)
        self._turn.may_write()
        if self._taken:
            (found,) = self._tx.read(postgres.task_versions(sorted(self._taken)), begin=False)
            if dict(found) != self._taken:
                raise Stale(f"{len(self._taken)} tasks taken, versions now {dict(found)}")
        super().write(new_logs, changed, now, epoch)
