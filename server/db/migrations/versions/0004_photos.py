"""photos: tus uploads, photos, and the photo references of observations (backfilled)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 22:12:16.439629
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from server.db.types import UTCDateTime
from server.domain.evidence import references

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "photos",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("byte_size", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("captured_at", sa.String(length=40), nullable=True),
        sa.Column("captured_has_offset", sa.Boolean(), nullable=False),
        sa.Column("gps_lat", sa.Double(), nullable=True),
        sa.Column("gps_lon", sa.Double(), nullable=True),
        sa.Column("gps_alt", sa.Double(), nullable=True),
        sa.Column("make", sa.String(length=128), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("software", sa.String(length=128), nullable=True),
        sa.Column("orientation", sa.Integer(), nullable=True),
        sa.Column("dhash", sa.String(length=16), nullable=False),
        sa.Column("original_key", sa.String(length=512), nullable=False),
        sa.Column("display_key", sa.String(length=512), nullable=False),
        sa.Column("display_width", sa.Integer(), nullable=False),
        sa.Column("display_height", sa.Integer(), nullable=False),
        sa.Column("thumb_key", sa.String(length=512), nullable=False),
        sa.Column("thumb_width", sa.Integer(), nullable=False),
        sa.Column("thumb_height", sa.Integer(), nullable=False),
        sa.Column("uploaded_by", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["uploaded_by"], ["users.id"], name=op.f("fk_photos_uploaded_by_users")),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_photos")),
    )
    with op.batch_alter_table("photos", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_photos_uploaded_by"), ["uploaded_by"], unique=False)

    op.create_table(
        "uploads",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("upload_offset", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("metadata_header", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failure_code", sa.String(length=32), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name=op.f("fk_uploads_device_id_devices")),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_uploads_owner_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.create_index("ix_uploads_expires_at", ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_uploads_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_uploads_sha256"), ["sha256"], unique=False)

    op.create_table(
        "photo_refs",
        sa.Column("observation_id", sa.Uuid(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("visit_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["observation_id"], ["observations.id"], name=op.f("fk_photo_refs_observation_id_observations")
        ),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name=op.f("fk_photo_refs_visit_id_visits")),
        sa.PrimaryKeyConstraint("observation_id", "sha256", name=op.f("pk_photo_refs")),
    )
    with op.batch_alter_table("photo_refs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_photo_refs_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_photo_refs_visit_id"), ["visit_id"], unique=False)

    _backfill_refs()


def _backfill_refs() -> None:
    """Observations stored before this revision name photos too: record their references."""
    bind = op.get_bind()
    observations = sa.table(
        "observations",
        sa.column("id", sa.Uuid()),
        sa.column("visit_id", sa.Uuid()),
        sa.column("value", sa.JSON()),
    )
    refs = sa.table(
        "photo_refs",
        sa.column("observation_id", sa.Uuid()),
        sa.column("sha256", sa.String()),
        sa.column("visit_id", sa.Uuid()),
        sa.column("kind", sa.String()),
    )
    rows: list[dict[str, Any]] = []
    for obs_id, visit_id, value in bind.execute(sa.select(observations)):
        rows += [
            {"observation_id": obs_id, "sha256": r.sha256, "visit_id": visit_id, "kind": r.kind}
            for r in references(value)
        ]
    if rows:
        op.bulk_insert(refs, rows)


def downgrade() -> None:
    with op.batch_alter_table("photo_refs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_photo_refs_visit_id"))
        batch_op.drop_index(batch_op.f("ix_photo_refs_sha256"))

    op.drop_table("photo_refs")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_uploads_sha256"))
        batch_op.drop_index(batch_op.f("ix_uploads_owner_id"))
        batch_op.drop_index("ix_uploads_expires_at")

    op.drop_table("uploads")
    with op.batch_alter_table("photos", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_photos_uploaded_by"))

    op.drop_table("photos")
