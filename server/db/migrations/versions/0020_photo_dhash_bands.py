"""photos.dhash_b0..b3: the dHash's four 16-bit bands, indexed, for the near-duplicate search

A visit's evidence flags a photo whose dHash lies within 10 bits of another stored photo's. That search
read every stored photo's hash and compared it in Python: about 0.3 s for 50,000 photos, and growing
with every photo a city's workers take. With each band indexed, it looks up only the hashes that share
a band within 2 bits of one of the visit's photos' (media/phash.py, multi-index hashing), which holds
every hash within 11 bits.

Existing rows get their bands from their hash: in SQL on PostgreSQL, in Python on SQLite (no hex
parsing there).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

BANDS = ("dhash_b0", "dhash_b1", "dhash_b2", "dhash_b3")


def upgrade() -> None:
    with op.batch_alter_table("photos", schema=None) as batch_op:
        for band in BANDS:
            batch_op.add_column(sa.Column(band, sa.Integer(), nullable=True))
    _fill_bands()
    with op.batch_alter_table("photos", schema=None) as batch_op:
        for band in BANDS:
            batch_op.create_index(batch_op.f(f"ix_photos_{band}"), [band], unique=False)


def _fill_bands() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        parts = ", ".join(
            f"{band} = ('x' || substr(dhash, {4 * i + 1}, 4))::bit(16)::int" for i, band in enumerate(BANDS)
        )
        op.execute(f"UPDATE photos SET {parts}")  # noqa: S608 (built from the constants above)
        return
    photos = sa.table("photos", sa.column("sha256"), sa.column("dhash"), *(sa.column(b) for b in BANDS))
    rows = bind.execute(sa.select(photos.c.sha256, photos.c.dhash)).all()
    for sha256, dhash in rows:
        values = {band: int(dhash[4 * i : 4 * i + 4], 16) for i, band in enumerate(BANDS)}
        bind.execute(photos.update().where(photos.c.sha256 == sha256).values(**values))


def downgrade() -> None:
    with op.batch_alter_table("photos", schema=None) as batch_op:
        for band in BANDS:
            batch_op.drop_index(batch_op.f(f"ix_photos_{band}"))
            batch_op.drop_column(band)
