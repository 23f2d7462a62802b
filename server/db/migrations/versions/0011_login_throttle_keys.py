"""login_throttles: counted under a keyed digest of the username, not the username as typed

A username nobody has is counted too, and it is often a password typed into the wrong field: stored as
typed, it stayed in the table in clear. The counters are short-lived (a lockout lasts an hour at most),
so the table is made anew, empty, keyed by `username_key` (server/security/throttle_keys.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 03:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _throttles(key: str) -> None:
    op.create_table(
        "login_throttles",
        sa.Column(key, sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", UTCDateTime(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint(key, name=op.f("pk_login_throttles")),
    )


def upgrade() -> None:
    op.drop_table("login_throttles")
    _throttles("username_key")


def downgrade() -> None:
    op.drop_table("login_throttles")
    _throttles("username")
