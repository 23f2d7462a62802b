"""Many rows in one statement: on PostgreSQL each column goes as one array and `unnest` rebuilds the rows.

A completed visit writes 20 answers and 22 change-feed stamps. Sent as an executemany, each row is its
own Bind and Execute on PostgreSQL, which starts and ends its executor once a row, and SQLAlchemy
processes each row's parameters in Python. As arrays, the statement runs once for the whole batch and
asyncpg encodes each array in C: on the visit push that cut the server's CPU a visit by about a fifth
and PostgreSQL's by more (`bench visit-cpu`, docs/performance.md). SQLite keeps SQLAlchemy's
executemany: it has no arrays, and no round trips to save.

JSON columns travel as text arrays, cast in the SELECT (asyncpg's jsonb codec, as SQLAlchemy sets it up,
takes one value at a time); None there is written as JSON `null`, as SQLAlchemy's JSON type writes it.
Array types carry no length (VARCHAR, not VARCHAR(64)): an explicit cast would cut an over-long value
short, where the INSERT refuses it, as it does from an executemany.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from sqlalchemy import JSON, Table, insert
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from server.db.engine import json_text

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


class BulkInsert:
    """INSERT of many rows of `table` (each a mapping holding every one of `columns`); with `upsert_on`,
    a row whose key is taken updates the other columns instead. Rows must be unique by that key: one
    statement cannot update a row twice."""

    def __init__(self, table: Table, columns: Sequence[str], *, upsert_on: Sequence[str] = ()) -> None:
        self.columns = tuple(columns)
        updated = [c for c in self.columns if c not in upsert_on]
        self._pg_sql, self._converters = _unnest_sql(table, self.columns, upsert_on, updated)
        self._statement: Any = insert(table)
        if upsert_on:
            upsert = sqlite_insert(table)
            self._statement = upsert.on_conflict_do_update(
                index_elements=list(upsert_on), set_={c: upsert.excluded[c] for c in updated}
            )

    def run(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write `rows` in the session's transaction."""
        if not rows:
            return
        if session.get_bind().dialect.name != "postgresql":
            session.execute(self._statement, list(rows))
            return
        self._send(session, [[row[name] for row in rows] for name in self.columns])

    def run_objects(self, session: Session, objects: Sequence[object]) -> None:
        """As `run`, for objects holding each column as an attribute of its name: on PostgreSQL the
        columns are read off them, with no dict built for each row."""
        if not objects:
            return
        if session.get_bind().dialect.name != "postgresql":
            session.execute(self._statement, [{c: getattr(o, c) for c in self.columns} for o in objects])
            return
        self._send(session, [list(map(attrgetter(name), objects)) for name in self.columns])

    def _send(self, session: Session, columns: list[list[Any]]) -> None:
        arrays = []
        for name, values, convert in zip(self.columns, columns, self._converters, strict=True):
            try:
                arrays.append(values if convert is None else [convert(v) for v in values])
            except (TypeError, ValueError) as exc:  # as SQLAlchemy reports a value its types refuse
                raise StatementError(f"{name}: {exc}", self._pg_sql, None, exc) from exc
        session.connection().exec_driver_sql(self._pg_sql, tuple(arrays))


def _unnest_sql(
    table: Table, columns: Sequence[str], upsert_on: Sequence[str], updated: Sequence[str]
) -> tuple[str, list[Callable[[Any], Any] | None]]:
    arrays, selected = [], []
    converters: list[Callable[[Any], Any] | None] = []
    quote = _PG.identifier_preparer.quote  # a column named like a keyword (`at`, `order`) stays a name
    for number, name in enumerate(columns, start=1):
        column_type = table.c[name].type
        # What PostgreSQL sees: JSONType is JSON with a JSONB variant there, LogJSON plain JSON.
        on_pg = column_type.dialect_impl(_PG)
        is_json = isinstance(on_pg, JSON)
        sql_type = "TEXT" if is_json else column_type.compile(dialect=_PG).split("(")[0]
        arrays.append(f"${number}::{sql_type}[]")
        json_type = "JSONB" if isinstance(on_pg, postgresql.JSONB) else "JSON"
        selected.append(f"{quote(name)}::{json_type}" if is_json else quote(name))
        # Our own column types check values on the way in (UTCDateTime refuses a naive time, which
        # PostgreSQL would read in the server's zone): they do so here too.
        own = column_type.bind_processor(_PG) if isinstance(column_type, TypeDecorator) else None
        converters.append(json_text if is_json else own)
    # Built from the table's own metadata, never from a value: the values go as parameters.
    # In the order given (WITH ORDINALITY): an upsert locks rows in that order, and callers that sort
    # their rows rely on it to keep two writers of the same keys from deadlocking.
    names = ", ".join(quote(c) for c in columns)
    target, rows = f"{quote(table.name)} ({names})", f"unnest({', '.join(arrays)}) WITH ORDINALITY"
    given = f"given({names}, given_order) ORDER BY given_order"
    sql = f"INSERT INTO {target} SELECT {', '.join(selected)} FROM {rows} AS {given}"  # noqa: S608
    if upsert_on:
        assignments = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in updated)
        sql += f" ON CONFLICT ({', '.join(quote(c) for c in upsert_on)}) DO UPDATE SET {assignments}"
    return sql, converters
