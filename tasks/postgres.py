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
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any
from uuid import UUID

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
    for every process), as one JSON array of rows: ``task_rows`` reads it."""
    columns = ", ".join(_column(AsyncTask, n) for n in fields)
    sql = (
        f"SELECT coalesce(json_agg(json_build_array({columns})), '[]')::text FROM ("
        f"SELECT {columns} FROM {_table(AsyncTask)} "
        f"WHERE {_column(AsyncTask, 'id')} = ANY(%s::uuid[]) "
        f"ORDER BY {_column(AsyncTask, 'id')} FOR NO KEY UPDATE) AS locked"
    )
    return sql, [_array(task_ids)]


def task_rows(fetched: list[tuple[Any, ...]], fields: list[str]) -> list[tuple[Any, ...]]:
    """``locked_tasks``' rows, timestamps parsed. One JSON text parsed by orjson costs a
    fraction of psycopg loading each column of each row in Python (py-spy, docs/benchmarks.md)."""
    times = [i for i, name in enumerate(fields) if name in _TIMESTAMPS]
    rows: list[list[Any]] = orjson.loads(fetched[0][0])
    for row in rows:
        for i in times:
            if row[i] is not None:
                row[i] = datetime.fromisoformat(row[i])
    return [tuple(row) for row in rows]


_TIMESTAMPS = frozenset({"created_at", "started_at", "finished_at", "updated_at"})


def log_entries(event_ids: list[str], offsets: dict[tuple[str, int], list[int]]) -> Statement:
    """(event id, source, partition, offset) of the log rows holding any of ``event_ids``
    or any of the positions ``offsets`` names; each branch uses a unique index."""
    pick = ", ".join(
        _column(TaskEventLog, n) for n in ("event_id", "source", "partition", "offset")
    )
    where = [f"{_column(TaskEventLog, 'event_id')} = ANY(%s::uuid[])"]
    params: list[Any] = [_array(event_ids)]
    for (source, partition), values in offsets.items():
        where.append(
            f"({_column(TaskEventLog, 'source')} = %s AND "
            f"{_column(TaskEventLog, 'partition')} = %s AND "
            f"{_column(TaskEventLog, 'offset')} = ANY(%s::bigint[]))"
        )
        params += [source, partition, _array(values)]
    sql = f"SELECT {pick} FROM {_table(TaskEventLog)} WHERE {' OR '.join(where)}"
    return sql, params


def insert_logs(rows: Sequence[tuple[TaskRow, TaskEvent, bool]], now: datetime) -> Statement:
    """One INSERT for the batch's new log rows (there is at least one), in order."""
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
    values = [
        (
            task.id,
            event.event_id,
            event.event_type,
            event.position.source,
            event.position.partition,
            event.position.offset,
            event.occurred_at,
            event.data,
            moved,
            event.traceparent,
        )
        for task, event, moved in rows
    ]
    targets = ", ".join(_column(TaskEventLog, n) for n in [*kinds, "applied_at"])
    sql = (
        f"INSERT INTO {_table(TaskEventLog)} ({targets}) "
        f"SELECT {', '.join(_fields(kinds.values()))}, %s::timestamptz "
        f"FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS v(r, n) ORDER BY n"
    )
    return sql, [now, _rows_json(values)]


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
    values = [tuple(getattr(row, name) for name in names) for row in rows]
    picked = _fields(["uuid", *(kinds.get(n, "text") for n in fields)])
    assignments = ", ".join(
        f"{_column(AsyncTask, n)} = {value}" for n, value in zip(fields, picked[1:], strict=True)
    )
    sql = (
        f"UPDATE {_table(AsyncTask)} AS t "
        f"SET {assignments}, {_column(AsyncTask, 'updated_at')} = %s::timestamptz "
        f"FROM jsonb_array_elements(%s::jsonb) AS v(r) "
        f"WHERE t.{_column(AsyncTask, 'id')} = {picked[0]}"
    )
    return sql, [now, _rows_json(values)]


def _fields(kinds: Iterable[str]) -> list[str]:
    """SQL reading each element of a JSON row ``v.r`` as its column's type. A JSON null is
    SQL NULL, also for a jsonb column (where ``->`` would keep it as the JSON value)."""
    picked = []
    for i, kind in enumerate(kinds):
        if kind == "jsonb":
            picked.append(f"nullif(v.r->{i}, 'null'::jsonb)")
        elif kind == "text":
            picked.append(f"v.r->>{i}")
        else:
            picked.append(f"(v.r->>{i})::{kind}")
    return picked


def _array(values: Iterable[str | int]) -> str:
    """A PostgreSQL array literal of UUIDs or integers (no character in them needs quoting),
    joined in C: psycopg's array dumper handles each element in Python."""
    return "{" + ",".join(map(str, values)) + "}"


def _rows_json(rows: list[tuple[Any, ...]]) -> str:
    """The batch's rows as one JSON array of arrays: orjson writes it in C, where psycopg's
    array dumpers walk every element in Python (the largest part of a batch's database
    CPU, py-spy, docs/benchmarks.md). The server reads it once as jsonb."""
    try:
        return orjson.dumps(rows).decode()
    except TypeError:  # an integer beyond 64 bits in some event's data: json writes it
        return json.dumps(rows, default=_plain, separators=(",", ":"), ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


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
