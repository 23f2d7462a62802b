"""sync_conflicts.mutation_id indexed

A conflict is looked up by the mutation that made it when a client sends another edit at a seq it used
(kept once however often it is sent) and when a tablet is handed over (its author's earlier refused edits
name the sender). Without an index each of those read the whole table, which only grows.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 23:55:00
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_conflicts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sync_conflicts_mutation_id"), ["mutation_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sync_conflicts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_conflicts_mutation_id"))
