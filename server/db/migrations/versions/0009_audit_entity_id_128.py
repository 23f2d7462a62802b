"""audit_events.entity_id: 128 characters, room for a template's `code@version`

A template code may have 64 characters, so its audit row's `code@version` may have 75: PostgreSQL refused
it (a 500 when such a template was created; SQLite does not check lengths). Found by fuzzing the API.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _resize_entity_id(64, 128)


def downgrade() -> None:
    _resize_entity_id(128, 64)


def _resize_entity_id(before: int, after: int) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("audit_events", "entity_id", type_=sa.String(after), existing_type=sa.String(before))
        return
    # SQLite keeps the declared type in its schema, which the schema check compares, and changes it only
    # by copying the table. Nothing references audit_events, so the copy is safe; but dropping the old
    # table drops its append-only triggers with it, so they are made again on the copy (as in 0001).
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column(
            "entity_id", type_=sa.String(after), existing_type=sa.String(before), existing_nullable=False
        )
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
        )
