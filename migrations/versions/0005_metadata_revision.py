"""A counter of metadata changes per collection, for the in-memory metadata columns.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 00:00:00

``collections.metadata_revision`` is bumped, in the writing transaction, whenever the
metadata of an existing item changes (adds and deletes do not bump it: an index catching up
learns of those from the ids). A process that holds the collection's metadata in memory
beside its index (:mod:`semstore.index.metadata_columns`) compares it after a write of
another process and reloads the columns only when it moved.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("metadata_revision", sa.Integer(), nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("metadata_revision")
