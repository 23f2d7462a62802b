"""observations: the base an answer was made on, so answers made side by side merge

base: the item's value as the device showed it when the answer was made. With it a list answer (photos,
signatures, multiple choice) merges with answers the device had not seen (sync/answer_merge.py); the
observations stored before have none, and for them the latest answer wins as before.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (SQLite has had ADD and DROP COLUMN since 3.35): a batch copy of
# observations would have to drop a table that photo_refs' foreign key points at.


def upgrade() -> None:
    op.add_column(
        "observations",
        sa.Column(
            "base",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE observations DROP COLUMN base")
