"""sync_clients.epoch: the database epoch of each client's last push

After a restore from backup (`fivestep sync-admin new-epoch`) a client's last_mutation_seq may be behind
what its device already saw confirmed, and dropped. The push compares the client's epoch with the
database's to tell that loss (recorded for a supervisor, the queue moves on) from an ordinary gap (the
device sends again from the expected seq). Clients known so far are of the current epoch.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (nullable, so SQLite needs no table copy).
    op.add_column("sync_clients", sa.Column("epoch", sa.Uuid(), nullable=True))
    op.execute("UPDATE sync_clients SET epoch = (SELECT epoch FROM sync_state WHERE id = 1)")


def downgrade() -> None:
    op.drop_column("sync_clients", "epoch")
