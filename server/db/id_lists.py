"""`column IN (ids)` for the long lists of sync (a pull page, a push batch, a page's photo hashes) and of
the near-duplicate search (dHash bands).

With IN, SQLAlchemy renders one placeholder per id on every execution (2,000 for a pull page), which
costs more than the query. So the ids go as one parameter: on PostgreSQL `column = ANY($1)` with an
array, on SQLite `column IN (SELECT value FROM json_each(?))` with a JSON array of the ids as SQLite
stores them (32 hex digits), which measured as fast as a full table scan where IN took a third longer.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

import msgspec
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    String,
    Uuid,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import KeyedColumnElement
from sqlalchemy.types import TypeEngine


def among(
    session: AsyncSession,
    column: KeyedColumnElement[Any] | InstrumentedAttribute[Any],
    ids: Collection[uuid.UUID | str],
) -> ColumnElement[bool]:
    """`ids` as UUIDs or their text (the change feed keeps text): PostgreSQL's driver takes either."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(Uuid())))
    # The feed's text ids are canonical (str(uuid)): dropping the dashes gives what SQLite stores.
    return _in_json_list(column, [i.hex if isinstance(i, uuid.UUID) else i.replace("-", "") for i in ids])


def among_text(
    session: AsyncSession,
    column: KeyedColumnElement[Any] | InstrumentedAttribute[Any],
    values: Collection[str],
) -> ColumnElement[bool]:
    """`column IN (values)` for a text column (a page's photo hashes), as one parameter like `among`."""
    return _among_values(session, column, list(values), String())


def among_ints(
    session: AsyncSession,
    column: KeyedColumnElement[Any] | InstrumentedAttribute[Any],
    values: Collection[int],
) -> ColumnElement[bool]:
    """`column IN (values)` for an integer column (the dHash bands a near-duplicate search looks up)."""
    return _among_values(session, column, list(values), Integer())


def _among_values(
    session: AsyncSession,
    column: KeyedColumnElement[Any] | InstrumentedAttribute[Any],
    values: list[str] | list[int],
    element: TypeEngine[Any],
) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(element)))
    return _in_json_list(column, values)


def _in_json_list(
    column: KeyedColumnElement[Any] | InstrumentedAttribute[Any], values: list[str] | list[int]
) -> ColumnElement[bool]:
    """SQLite: `column IN` the values of one JSON array parameter."""
    array = bindparam(None, msgspec.json.encode(values).decode(), type_=String())
    return column.in_(select(literal_column("value")).select_from(func.json_each(array)))
