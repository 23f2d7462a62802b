"""Rows written in one statement (server/db/bulk_insert.py) read back exactly as rows written one by one.

On PostgreSQL the rows travel as one array a column and `unnest` rebuilds them; SQLAlchemy's executemany,
which they replace, is the reference: every value must come back the same, including the awkward ones
(JSON null, text with quotes and CJK, instants given in another zone, an over-long string).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import BigInteger, Boolean, Column, Float, Integer, MetaData, String, Table, insert, select
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from server.db.bulk_insert import BulkInsert
from server.db.engine import Database
from server.db.types import JSONType, UTCDateTime

SCRATCH = Table(
    "bulk_insert_scratch",
    MetaData(),
    Column("id", String(36), primary_key=True),
    Column("label", String(8)),
    Column("note", String),
    Column("value", JSONType, nullable=True),
    Column("count", Integer, nullable=True),
    Column("seq", BigInteger),
    Column("lat", Float, nullable=True),
    Column("flag", Boolean, nullable=True),
    Column("at", UTCDateTime, nullable=True),
    Column("uid", String(36), nullable=True),
    Column("order", Integer, nullable=True),  # a keyword for a name: quoted, it is just a column
)
COLUMNS = [c.name for c in SCRATCH.columns]
AWKWARD_VALUES: list[Any] = [
    None,
    {"photos": [{"sha256": "a" * 64, "view": "kitchen"}]},
    ["冰箱", "电视", 'a "quoted" word', "back\\slash"],
    "低保户 O'Brien",
    0,
    -12.25,
    True,
    {"nested": {"null": None, "empty": {}, "list": []}},
]
BEIJING = dt.timezone(dt.timedelta(hours=8))


def _rows(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}-{n}",
            "label": f"l{n}",
            "note": None if n % 3 == 0 else f"第{n}条 'note'\n",
            "value": value,
            "count": None if n % 2 else n,
            "seq": -(2**62) + n,
            "lat": None if n == 1 else 39.9042 + n / 1e6,
            "flag": (None, True, False)[n % 3],
            "at": None if n == 2 else dt.datetime(2026, 12, 1, 8, n, 30, 123456, tzinfo=BEIJING),
            "uid": str(uuid.uuid5(uuid.NAMESPACE_OID, str(n))) if n % 2 else None,
            "order": n,
        }
        for n, value in enumerate(AWKWARD_VALUES)
    ]


async def _with_scratch(url: str, work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(SCRATCH.create)
        async with db.write_session() as session:
            return await work(session)
    finally:
        await db.dispose()


async def _read(session: AsyncSession, prefix: str) -> list[dict[str, Any]]:
    query = select(SCRATCH, SCRATCH.c.value.is_(None).label("sql_null")).where(
        SCRATCH.c.id.like(f"{prefix}-%")
    )
    rows = [dict(r._mapping) for r in await session.execute(query.order_by(SCRATCH.c.id))]
    return [{**r, "id": r["id"].split("-", 1)[1]} for r in rows]


def test_rows_written_in_one_statement_read_back_as_those_written_one_by_one(database_url: str) -> None:
    async def work(session: AsyncSession) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        bulk = BulkInsert(SCRATCH, COLUMNS)
        await session.run_sync(lambda s: bulk.run(s, _rows("bulk")))
        await session.execute(insert(SCRATCH), _rows("each"))
        await session.commit()
        return await _read(session, "bulk"), await _read(session, "each")

    bulk, each = asyncio.run(_with_scratch(database_url, work))
    assert len(bulk) == len(AWKWARD_VALUES)
    assert bulk == each
    assert [r["value"] for r in bulk] == AWKWARD_VALUES
    assert bulk[0]["at"] == dt.datetime(2026, 12, 1, 0, 0, 30, 123456, tzinfo=dt.UTC)


def test_objects_written_in_one_statement_read_back_as_the_same_rows_given_as_mappings(
    database_url: str,
) -> None:
    """`run_objects` reads each column off an attribute of its name (the answers of a visit)."""

    async def work(session: AsyncSession) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        bulk = BulkInsert(SCRATCH, COLUMNS)
        await session.run_sync(
            lambda s: bulk.run_objects(s, [SimpleNamespace(**r) for r in _rows("objects")])
        )
        await session.run_sync(lambda s: bulk.run(s, _rows("mappings")))
        await session.commit()
        return await _read(session, "objects"), await _read(session, "mappings")

    objects, mappings = asyncio.run(_with_scratch(database_url, work))
    assert len(objects) == len(AWKWARD_VALUES)
    assert objects == mappings


def test_an_over_long_string_is_refused_not_cut_short(database_url: str) -> None:
    async def work(session: AsyncSession) -> int:
        rows = _rows("long")
        rows[3]["label"] = "nine char"
        with pytest.raises((DBAPIError, StatementError)):
            await session.run_sync(lambda s: BulkInsert(SCRATCH, COLUMNS).run(s, rows))
        await session.rollback()
        return len(await _read(session, "long"))

    if database_url.startswith("sqlite"):
        pytest.skip("SQLite keeps any length of text in a VARCHAR(8): there is nothing to refuse")
    assert asyncio.run(_with_scratch(database_url, work)) == 0


def test_a_time_without_a_zone_is_refused_as_sqlalchemy_refuses_it(database_url: str) -> None:
    """PostgreSQL would read a naive time in its own zone: the column type refuses it first, on both."""

    async def work(session: AsyncSession) -> int:
        rows = _rows("naive")
        rows[4]["at"] = dt.datetime(2026, 12, 1, 8, 0)
        with pytest.raises(StatementError, match="naive"):
            await session.run_sync(lambda s: BulkInsert(SCRATCH, COLUMNS).run(s, rows))
        await session.rollback()
        return len(await _read(session, "naive"))

    assert asyncio.run(_with_scratch(database_url, work)) == 0


def test_an_upsert_updates_the_rows_whose_key_is_taken_and_adds_the_others(database_url: str) -> None:
    def first(session: Session) -> None:
        BulkInsert(SCRATCH, COLUMNS).run(session, _rows("up")[:3])

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        await session.run_sync(first)
        again = [{**r, "label": "again", "value": {"seen": 2}} for r in _rows("up")[1:5]]
        upsert = BulkInsert(SCRATCH, COLUMNS, upsert_on=["id"])
        await session.run_sync(lambda s: upsert.run(s, again))
        await session.commit()
        return await _read(session, "up")

    rows = asyncio.run(_with_scratch(database_url, work))
    assert [(r["id"], r["label"]) for r in rows] == [
        ("0", "l0"),
        ("1", "again"),
        ("2", "again"),
        ("3", "again"),
        ("4", "again"),
    ]
    assert rows[0]["value"] is None and rows[0]["sql_null"] is False  # JSON null, as written
    assert all(r["value"] == {"seen": 2} for r in rows[1:])
