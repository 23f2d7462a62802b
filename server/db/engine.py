"""The async engine and its two session factories.

SQLite allows one writer. A deferred BEGIN that reads and then writes fails at once with
"database is locked" when another writer got there first, so write transactions start with
BEGIN IMMEDIATE (they queue on busy_timeout instead). Reads stay deferred so they never queue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from sync.private_files import owner_only

BEGIN_OPTION = "fivestep_begin"


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        from server.db.feed import install

        install()  # every write to a synced record lands in the change feed
        self.url = url
        self.engine = create_engine(url, echo=echo)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        writer = self.engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        self.write_session = async_sessionmaker(writer, expire_on_commit=False)
        self.read_session = async_sessionmaker(self.engine, expire_on_commit=False)

    async def dispose(self) -> None:
        await self.engine.dispose()


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    parsed = make_url(url)
    # JSON columns (answers, GPS claims, snapshots, audit details) are written a dozen per pushed
    # mutation and read back by the tens of thousands in a first sync: msgspec does both several times
    # faster than the standard library, with the same Python values on the way back.
    json = {"json_serializer": json_text, "json_deserializer": msgspec.json.decode}
    if parsed.get_backend_name() != "sqlite":
        engine = create_async_engine(
            url, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=True, **json
        )
        event.listen(engine.sync_engine, "do_connect", _connect_or_unreachable)
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        owner_only(Path(parsed.database))  # ID numbers and health, unmasked: no other account reads them
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30}, **json)
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


def json_text(value: object) -> str:
    """How JSON columns are written (bulk_insert.py writes them so too)."""
    return msgspec.json.encode(value).decode()


def _connect_or_unreachable(dialect: Dialect, _record: ConnectionPoolEntry, cargs: Any, cparams: Any) -> Any:
    """A new connection; a server that refuses it or does not answer (down for a restart, the network
    cut) as an OperationalError, like every other "try again later" of the database's (errors.py: 503).
    asyncpg raises these as the socket's own OSError (TimeoutError is one), which SQLAlchemy passes on as
    it is, and which would otherwise be answered 500."""
    try:
        return dialect.connect(*cargs, **cparams)
    except OSError as exc:
        raise OperationalError("connect", None, exc) from exc


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "foreign_keys=ON",
        "busy_timeout=30000",
        "synchronous=NORMAL",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


__all__ = ["AsyncSession", "Database", "create_engine"]
