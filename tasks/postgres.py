"""The PostgreSQL statements of one ``tasks.apply`` batch: a fixed number, whatever its size,
sent in two round trips (``BatchTransaction``).

Columns travel as arrays (``= ANY(%s)``, ``unnest(%s)``) on a cursor with server-side
binding, so the SQL text is short and the same for every batch and psycopg adapts the
values in C. Django's default cursor binds client-side: it quotes every value into the
text in Python, and a 500-event batch spent most of its database time there (py-spy,
docs/benchmarks.md). The statements run on Django's connection, inside its transaction.
Other databases (the embedded SQLite) take the ORM path in ``tasks.apply``.

Round trips, not statements, set a small batch's latency: BEGIN, two SELECTs, INSERT, UPDATE
and COMMIT one after another were six, about half of a one-event batch's time at ingest
(docs/benchmarks.md). In psycopg's pipeline mode the reads go with BEGIN in one round trip
and the writes with COMMIT in a second.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from django.db import connection, transaction
from django.db.models import Field, Model

from tasks.models import AsyncTask, TaskEventLog

if TYPE_CHECKING:
    from streaming.events import TaskEvent
    from tasks.apply import TaskRow


Statement = tuple[str, list[Any]]


def locked_tasks(task_ids: list[str], fields: list[str]) -> Statement:
    """The tasks' ``fields``, locked for this transaction in id order (one lock order
    for every process). Rows go through ``task_rows``."""
    columns = ", ".join(
        f"{_column(AsyncTask, n)}::text" if n == "result" else _column(AsyncTask, n) for n in fields
    )
    sql = (
        f"SELECT {columns} FROM {_table(AsyncTask)} "
        f"WHERE {_column(AsyncTask, 'id')} = ANY(%b::uuid[]) "
        f"ORDER BY {_column(AsyncTask, 'id')} FOR NO KEY UPDATE"
    )
    return sql, [task_ids]


def task_rows(rows: list[tuple[Any, ...]], fields: list[str]) -> list[tuple[Any, ...]]:
    """``locked_tasks``' rows with the result parsed (read as text: orjson parses faster
    than psycopg's jsonb loader)."""
    result = fields.index("result")
    return [
        (
            *row[:result],
            None if row[result] is None else orjson.loads(row[result]),
            *row[result + 1 :],
        )
        for row in rows
    ]


def log_entries(event_ids: list[str], offsets: dict[tuple[str, int], list[int]]) -> Statement:
    """(event id, source, partition, offset) of the log rows holding any of ``event_ids``
    or any of the positions ``offsets`` names; each branch uses a unique index."""
    pick = ", ".join(
        _column(TaskEventLog, n) for n in ("event_id", "source", "partition", "offset")
    )
    where = [f"{_column(TaskEventLog, 'event_id')} = ANY(%b::uuid[])"]
    params: list[Any] = [event_ids]
    for (source, partition), values in offsets.items():
        where.append(
            f"({_column(TaskEventLog, 'source')} = %s AND "
            f"{_column(TaskEventLog, 'partition')} = %s AND "
            f"{_column(TaskEventLog, 'offset')} = ANY(%b::bigint[]))"
        )
        params += [source, partition, values]
    sql = f"SELECT {pick} FROM {_table(TaskEventLog)} WHERE {' OR '.join(where)}"
    return sql, params


def insert_logs(rows: Sequence[tuple[TaskRow, TaskEvent, bool]], now: datetime) -> Statement:
    """One INSERT for the batch's new log rows (there is at least one)."""
    kinds = {
        "task": "uuid",
        "event_id": "uuid",
        "event_type": "text",
        "source": "text",
        "partition": "integer",
        "offset": "bigint",
        "occurred_at": "timestamptz",
        "data": "jsonb",
        "changed_task": "boolean",
        "traceparent": "text",
    }
    columns: list[list[Any]] = [[] for _ in kinds]
    for task, event, moved in rows:
        pos = event.position
        values = (
            task.id,
            event.event_id,
            event.event_type,
            pos.source,
            pos.partition,
            pos.offset,
            event.occurred_at,
            _json(event.data),
            moved,
            event.traceparent,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    targets = ", ".join(_column(TaskEventLog, n) for n in [*kinds, "applied_at"])
    aliases = ", ".join(f"c{i}" for i in range(len(kinds)))
    arrays = ", ".join(f"%b::{kind}[]" for kind in kinds.values())
    sql = (
        f"INSERT INTO {_table(TaskEventLog)} ({targets}) SELECT {aliases}, %s::timestamptz "
        f"FROM unnest({arrays}) AS u({aliases})"
    )
    return sql, [now, *columns]


def update_tasks(rows: Sequence[TaskRow], fields: Sequence[str], now: datetime) -> Statement:
    """One UPDATE for every changed task (there is at least one): each row carries the
    task's final state."""
    kinds = {
        "progress": "smallint",
        "result": "jsonb",
        "started_at": "timestamptz",
        "finished_at": "timestamptz",
        "last_event_partition": "integer",
        "last_event_offset": "bigint",
    }
    names = ["id", *fields]
    columns: list[list[Any]] = [[] for _ in names]
    for row in rows:
        for name, column in zip(names, columns, strict=True):
            value = getattr(row, name)
            if name == "result" and value is not None:
                value = _json(value)
            column.append(value)
    assignments = ", ".join(f"{_column(AsyncTask, n)} = v.c{i}" for i, n in enumerate(names) if i)
    aliases = ", ".join(f"c{i}" for i in range(len(names)))
    arrays = ", ".join(
        "%b::uuid[]" if n == "id" else f"%b::{kinds.get(n, 'text')}[]" for n in names
    )
    sql = (
        f"UPDATE {_table(AsyncTask)} AS t "
        f"SET {assignments}, {_column(AsyncTask, 'updated_at')} = %s::timestamptz "
        f"FROM unnest({arrays}) AS v({aliases}) "
        f"WHERE t.{_column(AsyncTask, 'id')} = v.c0"
    )
    return sql, [now, *columns]


class BatchTransaction:
    """One batch's transaction: ``read`` sends BEGIN and the reads in one round trip,
    ``write`` the writes and COMMIT in another (psycopg's pipeline mode); an exception in
    between rolls back. Inside a caller's transaction (``atomic``; tests, the replay
    command) it runs as a savepoint, one statement at a time: the same statements."""

    def __init__(self) -> None:
        connection.ensure_connection()
        raw = connection.connection
        assert isinstance(raw, psycopg.Connection)
        self._raw: psycopg.Connection[Any] = raw
        self._pipelined = not connection.in_atomic_block
        self._atomic = None if self._pipelined else transaction.atomic()
        self._open = False

    def __enter__(self) -> BatchTransaction:
        if self._atomic is not None:
            self._atomic.__enter__()
        return self

    def read(self, *statements: Statement) -> list[list[tuple[Any, ...]]]:
        """Each statement's rows, in the batch's transaction (begun here)."""
        if not self._pipelined:
            return [_fetch(sql, params) for sql, params in statements]
        self._open = True
        cursors = [psycopg.Cursor(self._raw) for _ in statements]
        with connection.wrap_database_errors, self._raw.pipeline():
            self._raw.execute("BEGIN")
            for cursor, (sql, params) in zip(cursors, statements, strict=True):
                cursor.execute(sql, params)
        with connection.wrap_database_errors:
            return [cursor.fetchall() for cursor in cursors]

    def write(self, *statements: Statement) -> None:
        """Run the statements and commit."""
        if not self._pipelined:
            for sql, params in statements:
                _execute(sql, params)
            return
        with connection.wrap_database_errors, self._raw.pipeline():
            for sql, params in statements:
                psycopg.Cursor(self._raw).execute(sql, params)
            self._raw.execute("COMMIT")
        self._open = False

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._atomic is not None:
            self._atomic.__exit__(exc_type, exc, traceback)
            return
        if self._open:
            # Begun and not committed: an error (the caller's exception propagates). On a
            # broken connection the rollback fails too; Django then discards the connection.
            self._open = False
            try:
                with connection.wrap_database_errors:
                    self._raw.execute("ROLLBACK")
            except Exception:
                pass


def _cursor() -> psycopg.Cursor[Any]:
    """A server-side-binding cursor on Django's own connection (and transaction)."""
    connection.ensure_connection()
    raw = connection.connection
    assert isinstance(raw, psycopg.Connection)
    return psycopg.Cursor(raw)


def _fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    # Django's wrapper turns psycopg's errors into django.db's (an OperationalError is an
    # outage to the consumer, a DataError the batch's data) and marks a broken connection.
    with connection.wrap_database_errors, _cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _execute(sql: str, params: list[Any]) -> None:
    with connection.wrap_database_errors, _cursor() as cursor:
        cursor.execute(sql, params)


# Statement texts are rebuilt per batch from these; cached, they cost nothing per call.
@functools.cache
def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@functools.cache
def _column(model: type[Model], name: str) -> str:
    field = model._meta.get_field(name)
    assert isinstance(field, Field) and field.column
    return connection.ops.quote_name(field.column)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
