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
    # A batch copies the table on SQLite (its declared type is what the schema check compares); on
    # PostgreSQL it is a plain ALTER COLUMN. Nothing references audit_events, so the copy is safe.
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column(
            "entity_id", type_=sa.String(128), existing_type=sa.String(64), existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column(
            "entity_id", type_=sa.String(64), existing_type=sa.String(128), existing_nullable=False
        )
