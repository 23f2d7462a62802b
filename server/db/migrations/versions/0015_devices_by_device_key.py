"""devices.device_key indexed on its own

A device id is looked up across all accounts at every sign-in (is this install revoked for anyone?) and
when a device is revoked (every account signed in on the same install). The unique (user_id, device_key)
index leads with the user, so those lookups read the whole table.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 11:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_device_key"), ["device_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_device_key"))
