"""PostgreSQL writes a transaction's feed stamps once, inside its COMMIT

Until now a transaction wrote its stamps to `sync_changes` as it worked, each with a stand-in number, and
the trigger of migration 0017 renumbered them inside the COMMIT: every stamp was written twice, and as
the number is indexed (pulls read by it), the second write put new entries in both of the table's
indexes. The server now keeps the stamps until COMMIT and hands them over in the `sync_numbering` row,
one array per field, and the trigger writes them once, with their number. Measured on the 22 stamps of a
completed visit: 0.33-0.43 against 0.65-0.73 ms of PostgreSQL's CPU a visit. A stamp whose scope is NULL
takes its record's row out of the feed (a photo leaving a community with its household): done at COMMIT
as well, so that no transaction holds a lock on the feed while it queues for the number.

The arrays live for one transaction: stored out of line uncompressed (`EXTERNAL`), as compressing them
buys nothing. SQLite never writes the table (the server numbers there itself): the columns are JSON.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 04:00:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

TEXTS = postgresql.ARRAY(sa.Text()).with_variant(sa.JSON(), "sqlite")
BOOLEANS = postgresql.ARRAY(sa.Boolean()).with_variant(sa.JSON(), "sqlite")
ARRAYS: dict[str, sa.types.TypeEngine[Any]] = {
    "entities": TEXTS,
    "entity_ids": TEXTS,
    "stamp_scopes": TEXTS,
    "stamps_deleted": BOOLEANS,
}

WRITE_AT_COMMIT = """CREATE OR REPLACE FUNCTION sync_number_at_commit() RETURNS trigger AS $$
    DECLARE
      number bigint;
      exit_scopes text[] := string_to_array(NEW.scopes, ',');
    BEGIN
      UPDATE sync_state SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO number;
      DELETE FROM sync_changes USING unnest(NEW.entities, NEW.entity_ids, NEW.stamp_scopes)
          AS dropped(entity, entity_id, scope)
        WHERE dropped.scope IS NULL
          AND sync_changes.entity = dropped.entity AND sync_changes.entity_id = dropped.entity_id;
      INSERT INTO sync_changes (entity, entity_id, scope, seq, deleted)
        SELECT stamp.entity, stamp.entity_id, stamp.scope, number, stamp.deleted
        FROM unnest(NEW.entities, NEW.entity_ids, NEW.stamp_scopes, NEW.stamps_deleted)
          AS stamp(entity, entity_id, scope, deleted)
        WHERE stamp.scope IS NOT NULL
        ON CONFLICT (entity, entity_id)
          DO UPDATE SET scope = EXCLUDED.scope, seq = EXCLUDED.seq, deleted = EXCLUDED.deleted;
      UPDATE sync_scope_exits SET seq = number WHERE scope = ANY (exit_scopes) AND seq = NEW.placeholder;
      DELETE FROM sync_numbering WHERE placeholder = NEW.placeholder;
      RETURN NULL;
    END;
    $$ LANGUAGE plpgsql"""

RENUMBER_AT_COMMIT = """CREATE OR REPLACE FUNCTION sync_number_at_commit() RETURNS trigger AS $$
    DECLARE
      number bigint;
      scopes text[] := string_to_array(NEW.scopes, ',');
    BEGIN
      UPDATE sync_state SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO number;
      UPDATE sync_changes SET seq = number WHERE scope = ANY (scopes) AND seq = NEW.placeholder;
      UPDATE sync_scope_exits SET seq = number WHERE scope = ANY (scopes) AND seq = NEW.placeholder;
      DELETE FROM sync_numbering WHERE placeholder = NEW.placeholder;
      RETURN NULL;
    END;
    $$ LANGUAGE plpgsql"""


def upgrade() -> None:
    with op.batch_alter_table("sync_numbering", schema=None) as batch_op:
        for name, type_ in ARRAYS.items():
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for name in ARRAYS:
            op.execute(f"ALTER TABLE sync_numbering ALTER COLUMN {name} SET STORAGE EXTERNAL")
        op.execute(WRITE_AT_COMMIT)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(RENUMBER_AT_COMMIT)
    with op.batch_alter_table("sync_numbering", schema=None) as batch_op:
        for name in ARRAYS:
            batch_op.drop_column(name)
