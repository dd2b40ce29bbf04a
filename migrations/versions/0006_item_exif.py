"""EXIF facts of photos as typed, indexed columns: ``item_exif``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 00:00:00

One row per item whose image was read for EXIF (at ingest from now on): the local time it
was taken (seconds of the camera's wall clock, and its UTC offset when the file gives one),
camera make and model, lens, GPS latitude and longitude (integer millionths of a degree:
no column holds a float), orientation and original size.
A row of NULLs means "read, no EXIF"; items stored before this revision have no row until
``semstore exif-backfill`` reads their source files. Deleting an item cascades.
Downgrade drops the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    item_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "item_exif",
        sa.Column("item_id", item_id, sa.ForeignKey("items.id", ondelete="CASCADE", name="fk_item_exif_item_id_items"),
                  primary_key=True),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("taken_at", sa.BigInteger(), nullable=True),
        sa.Column("taken_at_offset_minutes", sa.Integer(), nullable=True),
        sa.Column("camera_make", sa.String(255), nullable=True),
        sa.Column("camera_model", sa.String(255), nullable=True),
        sa.Column("lens", sa.String(255), nullable=True),
        sa.Column("latitude_microdeg", sa.Integer(), nullable=True),  # (integers: no float column anywhere)
        sa.Column("longitude_microdeg", sa.Integer(), nullable=True),
        sa.Column("orientation", sa.Integer(), nullable=True),
        sa.Column("original_width", sa.Integer(), nullable=True),
        sa.Column("original_height", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("item_id", name="pk_item_exif"),
    )
    op.create_index("ix_item_exif_taken_at", "item_exif", ["collection_id", "taken_at"])
    op.create_index("ix_item_exif_camera", "item_exif", ["collection_id", "camera_model"])
    op.create_index("ix_item_exif_location", "item_exif", ["collection_id", "latitude_microdeg", "longitude_microdeg"])


def downgrade() -> None:
    op.drop_table("item_exif")
