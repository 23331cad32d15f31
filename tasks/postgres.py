"""The PostgreSQL statements of one ``tasks.apply`` batch: a fixed number, whatever its size,
sent in two round trips (``BatchTransaction``). They run on Django's connection. Other
databases (the embedded SQLite) take the ORM path in ``tasks.apply``.

What the profile asked for, in order (py-spy, docs/benchmarks.md):
- one statement per kind of row, not one per row: the batch's rows travel as ONE parameter,
  a JSON array of arrays written by orjson in C and read on the server with
  ``jsonb_array_elements``; the locked tasks come back as one JSON text. Arrays per column
  (``unnest``) spent half the batch's database CPU in psycopg's per-element dumpers and
  per-column loaders, in Python; quoting values into the text in Python was worse still;
- round trips, not statements, set a small batch's latency: BEGIN, two SELECTs, INSERT,
  UPDATE and COMMIT one after another were six, about half of a one-event batch's time.
  Now BEGIN and the reads go as one query text, the writes and COMMIT as another.
"""

from __future__ import annotations

import functools
import json
import operator
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


def locked_tasks(
    task_ids: list[str], fields: list[str], *, versions: bool = False, skip_locked: bool = False
) -> Statement:
    """The tasks' ``fields``, locked for this transaction in id order (one lock order
    for every process), as one JSON array of rows: ``task_rows`` reads it. For an apply in
    its turn (``tasks.turns``): each row ends with its version (``xmin``), and a task
    another transaction holds is left out instead of waited for (``skip_locked``)."""
    return _locked_sql(tuple(fields), versions, skip_locked), [_array(task_ids)]


# The statement texts depend only on the columns (and the number of partitions a batch
# spans), so each is built once per process.
@functools.cache
def _locked_sql(fields: tuple[str, ...], versions: bool, skip_locked: bool) -> str:
    columns = ", ".join(_column(AsyncTask, n) for n in fields)
    picked = f"{columns}, xmin::text AS version" if versions else columns
    return (
        f"SELECT coalesce(json_agg(json_build_array({columns}{', version' * versions})), "
        f"'[]')::text FROM (SELECT {picked} FROM {_table(AsyncTask)} "
        f"WHERE {_column(AsyncTask, 'id')} = ANY(%s::uuid[]) "
        f"ORDER BY {_column(AsyncTask, 'id')} FOR NO KEY UPDATE"
        f"{' SKIP LOCKED' * skip_locked}) AS locked"
    )


def current_version() -> Statement:
    """The version (``xmin``) the rows this transaction writes will have."""
    return "SELECT (txid_current() %% 4294967296)::text", []


def task_versions(task_ids: list[str]) -> Statement:
    """(id, version) of the tasks, locked (waiting for whoever holds them)."""
    column = _column(AsyncTask, "id")
    return (
        f"SELECT {column}::text, xmin::text FROM {_table(AsyncTask)} "
        f"WHERE {column} = ANY(%s::uuid[]) ORDER BY {column} FOR NO KEY UPDATE"
    ), [_array(task_ids)]


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


def log_entries(
    event_ids: list[str], offsets: dict[tuple[str, int], list[int]], epoch: str
) -> Statement:
    """(event id, source, partition, offset, epoch) of the log rows holding any of
    ``event_ids`` or any of the positions ``offsets`` names in ``epoch``; each branch uses a
    unique index."""
    params: list[Any] = [_array(event_ids)]
    for (source, partition), values in offsets.items():
        params += [source, partition, _array(values), epoch]
    return _log_sql(len(offsets)), params


@functools.cache
def _log_sql(partitions: int) -> str:
    pick = ", ".join(
        _column(TaskEventLog, n) for n in ("event_id", "source", "partition", "offset", "epoch")
    )
    where = [f"{_column(TaskEventLog, 'event_id')} = ANY(%s::uuid[])"]
    where += [
        f"({_column(TaskEventLog, 'source')} = %s AND "
        f"{_column(TaskEventLog, 'partition')} = %s AND "
        f"{_column(TaskEventLog, 'offset')} = ANY(%s::bigint[]) AND "
        f"{_column(TaskEventLog, 'epoch')} = %s)"
    ] * partitions
    return f"SELECT {pick} FROM {_table(TaskEventLog)} WHERE {' OR '.join(where)}"


_LOG_KINDS = {
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
# The task columns whose type is not text.
_TASK_KINDS = {
    "id": "uuid",
    "progress": "smallint",
    "result": "jsonb",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "last_event_partition": "integer",
    "last_event_offset": "bigint",
}


def insert_logs(
    rows: Sequence[tuple[TaskRow, TaskEvent, bool]], now: datetime, epoch: str
) -> Statement:
    """One INSERT for the batch's new log rows (there is at least one), in order, all of
    the topic's ``epoch``."""
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
    return _insert_sql(), [epoch, now, _rows_json(values)]


@functools.cache
def _insert_sql() -> str:
    # The epoch and the time are the batch's: one parameter each, not one per row.
    targets = ", ".join(_column(TaskEventLog, n) for n in [*_LOG_KINDS, "epoch", "applied_at"])
    return (
        f"INSERT INTO {_table(TaskEventLog)} ({targets}) "
        f"SELECT {', '.join(_fields(_LOG_KINDS.values()))}, %s::text, %s::timestamptz "
        f"FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS v(r, n) ORDER BY n"
    )


def update_tasks(rows: Sequence[TaskRow], fields: Sequence[str], now: datetime) -> Statement:
    """One UPDATE for every changed task (there is at least one): each row carries the
    task's final state."""
    row_of = _attributes(("id", *fields))
    ids = _array(row.id for row in rows)
    return _update_sql(tuple(fields)), [now, _rows_json([row_of(row) for row in rows]), ids]


@functools.cache
def _attributes(names: tuple[str, ...]) -> operator.attrgetter[Any]:
    return operator.attrgetter(*names)


@functools.cache
def _update_sql(fields: tuple[str, ...]) -> str:
    picked = _fields([_TASK_KINDS.get(n, "text") for n in ("id", *fields)])
    assignments = ", ".join(
        f"{_column(AsyncTask, n)} = {value}" for n, value in zip(fields, picked[1:], strict=True)
    )
    return (
        f"UPDATE {_table(AsyncTask)} AS t "
        f"SET {assignments}, {_column(AsyncTask, 'updated_at')} = %s::timestamptz "
        f"FROM jsonb_array_elements(%s::jsonb) AS v(r) "
        f"WHERE t.{_column(AsyncTask, 'id')} = {picked[0]} "
        # The same ids as an array: the planner cannot see how many rows the JSON holds
        # (it assumes 100) and joined them by scanning every task; with the array it finds
        # the batch's tasks by the primary key, whatever the table's size.
        f"AND t.{_column(AsyncTask, 'id')} = ANY(%s::uuid[])"
    )


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
    """One batch's transaction in two round trips: ``read`` sends BEGIN and the reads as
    one query text, ``write`` the writes and COMMIT as another; an exception in between
    rolls back. Inside a caller's transaction (``atomic``: tests, the replay command) it
    runs as a savepoint instead, with the same statements.

    One text per round trip, in the simple query protocol: the parameters are a few array
    literals and JSON texts (``_array``, ``_rows_json``) that libpq quotes in C, and one
    ``execute`` per round trip costs a fraction of psycopg's pipeline mode, which runs its
    machinery per statement in Python (a one-event batch's CPU halved)."""

    def __init__(self) -> None:
        connection.ensure_connection()
        raw = connection.connection
        assert isinstance(raw, psycopg.Connection)
        self._raw: psycopg.Connection[Any] = raw
        self._own = not connection.in_atomic_block
        self._atomic = None if self._own else transaction.atomic()
        self._open = False

    def __enter__(self) -> BatchTransaction:
        if self._atomic is not None:
            self._atomic.__enter__()
        return self

    def read(self, *statements: Statement, begin: bool = True) -> list[list[tuple[Any, ...]]]:
        """Each statement's rows, in the batch's transaction (begun here unless ``begin``
        is False: a read after the first)."""
        begin = begin and self._own
        cursor = self._run(statements, before="BEGIN" if begin else None)
        with connection.wrap_database_errors:
            if begin:
                cursor.nextset()  # past BEGIN's result
            results = [cursor.fetchall()]
            while cursor.nextset():
                results.append(cursor.fetchall())
        return results

    def write(self, *statements: Statement) -> None:
        """Run the statements and commit."""
        self._run(statements, after="COMMIT" if self._own else None)
        self._open = False

    def _run(
        self, statements: Sequence[Statement], before: str | None = None, after: str | None = None
    ) -> psycopg.ClientCursor[Any]:
        texts = [sql for sql, _ in statements]
        params = [value for _, values in statements for value in values]
        if before is not None:
            texts.insert(0, before)
            self._open = True
        if after is not None:
            texts.append(after)
        cursor = psycopg.ClientCursor(self._raw)
        with connection.wrap_database_errors:
            cursor.execute(";".join(texts), params)
        return cursor

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


# Statement texts are rebuilt per batch from these; cached, they cost nothing per call.
@functools.cache
def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@functools.cache
def _column(model: type[Model], name: str) -> str:
    field = model._meta.get_field(name)
    assert isinstance(field, Field) and field.column
    return connection.ops.quote_name(field.column)
