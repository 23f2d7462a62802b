"""PostgreSQL numbers a transaction's feed stamps inside its COMMIT

Until now the server took a transaction's sequence number (an UPDATE of `sync_state` whose row lock lasts
until commit), renumbered its stamps and then committed: three statements and the COMMIT while every
other writer of the feed queued for that lock, each statement a round trip through a busy event loop.
Now the server writes one row to `sync_numbering` before COMMIT, and a deferred constraint trigger does
the rest inside the COMMIT, so the lock is held only for PostgreSQL's own commit work. Numbers are still
handed out in commit order: the lock is still taken last and released by the commit itself.

SQLite has no deferred triggers and one writer at a time: the server goes on numbering there itself,
and its `sync_numbering` table stays empty.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 17:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

NUMBER_AT_COMMIT = (
    """CREATE FUNCTION sync_number_at_commit() RETURNS trigger AS $$
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
    $$ LANGUAGE plpgsql""",
    """CREATE CONSTRAINT TRIGGER sync_number_at_commit AFTER INSERT ON sync_numbering
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sync_number_at_commit()""",
)


def upgrade() -> None:
    op.create_table(
        "sync_numbering",
        sa.Column("placeholder", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("placeholder", name=op.f("pk_sync_numbering")),
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in NUMBER_AT_COMMIT:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER sync_number_at_commit ON sync_numbering")
        op.execute("DROP FUNCTION sync_number_at_commit()")
    op.drop_table("sync_numbering")
