"""uploads: the S3 multipart id of a direct upload, and the claim of the request processing an upload

direct_id: set when the device sends its parts to the store itself (server/services/direct_uploads.py).
processing_since: when a request began to process the fully received upload; others wait for it instead
of processing the same file again (server/services/photos.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 07:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch_op:
        batch_op.add_column(sa.Column("direct_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("processing_since", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch_op:
        batch_op.drop_column("processing_since")
        batch_op.drop_column("direct_id")
