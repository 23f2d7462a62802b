"""Sync bookkeeping: the commit-ordered sequence, the change feed, clients, mutations, conflicts, history.

Every transaction that changes a synced record takes the next number from `sync_state.seq` while holding
its row lock until commit, so sequence order is commit order and a cursor never skips a slow writer.
`sync_changes` holds one row per record (its latest change): the pull feed, compacted by construction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ARRAY, JSON, BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models.base import Base
from server.db.types import JSONType, LogJSON, utcnow

BigId = BigInteger().with_variant(Integer, "sqlite")


class SyncState(Base):
    __tablename__ = "sync_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    epoch: Mapped[uuid.UUID]
    """A new epoch (after a restore from backup) sends every device a reset."""
    tombstone_floor: Mapped[int] = mapped_column(BigInteger, default=0)
    """Tombstones at or below this sequence may be gone: a cursor behind it must reset."""


class SyncChange(Base):
    __tablename__ = "sync_changes"
    # A pull page is the first rows of each of the caller's scopes in this order: read straight off it.
    __table_args__ = (Index("ix_sync_changes_page", "scope", "seq", "entity", "entity_id"),)

    entity: Mapped[str] = mapped_column(String(16), primary_key=True)
    entity_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    """The record's id; for a photo, "sha256/community" (server.db.feed.photo_key)."""
    scope: Mapped[str] = mapped_column(String(40))
    """The community id the record belongs to, or "*" for what everyone gets (templates)."""
    seq: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(default=False)


class ScopeExit(Base):
    """A record left a scope (a household moved to another community): devices there must drop it."""

    __tablename__ = "sync_scope_exits"
    __table_args__ = (Index("ix_sync_scope_exits_scope_seq", "scope", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entity: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(BigInteger)


Texts = ARRAY(Text()).with_variant(JSON(), "sqlite")
"""A column of text arrays on PostgreSQL (the only database that writes them); JSON on SQLite."""


class SyncNumbering(Base):
    """PostgreSQL: a transaction's request for its sequence number, written just before COMMIT and
    served inside it (server/db/feed.py). A deferred trigger takes the number, writes the stamps this
    row carries (one array per field) with it, renumbers the scope exits carrying `placeholder` in
    `scopes` and deletes this row, all within the COMMIT, so the row lock on `sync_state` lasts only as
    long as PostgreSQL's own commit work. On SQLite the table stays empty: there the server takes the
    number itself."""

    __tablename__ = "sync_numbering"

    placeholder: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    scopes: Mapped[str] = mapped_column(Text)
    """The scopes of the scope exits written with the placeholder, separated by commas (scope ids hold
    none)."""
    entities: Mapped[list[str] | None] = mapped_column(Texts)
    entity_ids: Mapped[list[str] | None] = mapped_column(Texts)
    stamp_scopes: Mapped[list[str | None] | None] = mapped_column(Texts)
    """Each stamp's community; NULL takes the record's row out of the feed (a photo leaving one)."""
    stamps_deleted: Mapped[list[bool] | None] = mapped_column(ARRAY(Boolean()).with_variant(JSON(), "sqlite"))


class SyncClient(Base):
    __tablename__ = "sync_clients"

    client_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(index=True)
    device_id: Mapped[uuid.UUID | None]
    scope_path: Mapped[str] = mapped_column(String(512))
    """The user's node when the client first synced; if it changes, the client must rebuild."""
    last_mutation_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    epoch: Mapped[uuid.UUID | None]
    """The database epoch of the client's last push: another one now means the database was restored
    from a backup meanwhile, and mutations the device saw confirmed may be gone (see sync_push)."""
    clock_offset_ms: Mapped[int | None] = mapped_column(BigInteger)
    """server time minus device time at the last push: measured, shown, never used to order."""
    schema_version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MutationLog(Base):
    """Each (client, seq) once: replays answer from here; proof of exactly-once.

    A mutation_id may appear twice when a re-registered device resends a mutation another of its client
    ids already delivered (the second row replays the first's result), or when a device reused it for
    another edit (the second row is `rejected` with `mutation_id_reused`)."""

    __tablename__ = "sync_mutations"
    __table_args__ = (Index("ix_sync_mutations_mutation_id", "mutation_id"),)

    client_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    mutation_id: Mapped[uuid.UUID]
    op: Mapped[str] = mapped_column(String(40))
    args: Mapped[dict[str, Any]] = mapped_column(LogJSON)
    status: Mapped[str] = mapped_column(String(24))
    result: Mapped[dict[str, Any]] = mapped_column(LogJSON)
    user_id: Mapped[uuid.UUID]
    device_time: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SyncConflict(Base):
    """What a supervisor must look at: a losing value, a guarded change, a quarantined mutation."""

    __tablename__ = "sync_conflicts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    entity: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[str] = mapped_column(String(64), index=True)
    field: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(24))
    """field_conflict | guarded_change | parallel_update | update_after_delete | delete_after_update |
    quarantined | lost_in_restore"""
    level: Mapped[str] = mapped_column(String(8))
    base_version: Mapped[int | None]
    server_value: Mapped[Any] = mapped_column(JSONType, nullable=True)
    client_value: Mapped[Any] = mapped_column(JSONType, nullable=True)
    provisional: Mapped[str | None] = mapped_column(String(8))
    code: Mapped[str | None] = mapped_column(String(40))
    mutation_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    author_id: Mapped[uuid.UUID | None]
    handed_over_by: Mapped[uuid.UUID | None]
    """Who handed in the tablet this quarantined edit came from, its author no longer able to sign in
    (docs/sync-protocol.md, "Handing a tablet over"): kept by the handover, or refused before it (the
    handover sent its held photo files). None while no one handed that tablet in."""
    scope: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(12), default="open")
    resolution: Mapped[Any] = mapped_column(JSONType, nullable=True)
    resolved_by: Mapped[uuid.UUID | None]
    resolved_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RecordVersion(Base):
    """Every version of a mutable record: no acknowledged value is ever lost, only superseded."""

    __tablename__ = "record_versions"

    entity: Mapped[str] = mapped_column(String(16), primary_key=True)
    entity_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    changed: Mapped[list[str]] = mapped_column(JSONType)
    mutation_id: Mapped[uuid.UUID | None]
    author_id: Mapped[uuid.UUID | None]
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)
