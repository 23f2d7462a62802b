"""feed page index: (scope, seq, entity, entity_id), so a pull page reads only its own rows

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 03:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_changes") as batch_op:
        batch_op.create_index("ix_sync_changes_page", ["scope", "seq", "entity", "entity_id"], unique=False)
        batch_op.drop_index("ix_sync_changes_scope_seq")


def downgrade() -> None:
    with op.batch_alter_table("sync_changes") as batch_op:
        batch_op.create_index("ix_sync_changes_scope_seq", ["scope", "seq"], unique=False)
        batch_op.drop_index("ix_sync_changes_page")
