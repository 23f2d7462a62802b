"""`column IN (ids)` for the long id lists of sync (a pull page, a push batch).

On PostgreSQL it is sent as `column = ANY($1)` with one array parameter: with IN, SQLAlchemy renders one
placeholder per id on every execution (2,000 for a pull page), which costs more than the query. SQLite
has no arrays and takes the plain IN.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, Uuid, any_, bindparam
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute


def among(
    session: AsyncSession, column: InstrumentedAttribute[Any], ids: Collection[uuid.UUID | str]
) -> ColumnElement[bool]:
    """`ids` as UUIDs or their text (the change feed keeps text): PostgreSQL's driver takes either."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(Uuid())))
    return column.in_([i if isinstance(i, uuid.UUID) else uuid.UUID(i) for i in ids])
