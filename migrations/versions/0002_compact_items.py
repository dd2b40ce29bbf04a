"""Compact items: 16-byte binary content hash; integer Unix-second created_at on SQLite.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01 00:00:00

``items.content_hash`` (64 hex characters of SHA-256, stored once in the row and once in
the (collection_id, content_hash) unique index) becomes 16 bytes: the first 128 bits of
the SHA-256. Stored 64-hex values become ``bytes.fromhex(h[:32])``. A value that is not
hex of at least 32 characters (only an import could have stored one) becomes the first
16 bytes of the SHA-256 of its UTF-8 text: still unique, it can never match a file.

On SQLite ``items.created_at`` becomes INTEGER Unix seconds (from the UTC text of
``CURRENT_TIMESTAMP``; sub-seconds are dropped); PostgreSQL keeps ``timestamptz``.

SQLite cannot change a column's type, so there ``items`` is rebuilt (new table, copy,
drop, rename) by hand rather than with ``batch_alter_table``: the copy converts the
values, and the AUTOINCREMENT counter of the old table, which dropping it discards, is
carried over so the ids of deleted items are never handed out again. The space of the
old table is reused by later inserts; ``VACUUM`` returns it to the file system.

Downgrade restores the 0001 column types; content hashes come back as 32 hex
characters (the other half of the SHA-256 is gone), created_at as
``YYYY-MM-DD HH:MM:SS`` UTC text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: SQLite ``created_at`` default of this revision: UTC Unix seconds, as an INTEGER.
SQLITE_NOW_SECONDS = sa.text("(CAST(strftime('%s', 'now') AS INTEGER))")
#: The 0001 default (UTC ``YYYY-MM-DD HH:MM:SS`` text on SQLite).
NOW = sa.text("CURRENT_TIMESTAMP")

_TMP = "_items_0002"
_COLUMNS = ("id", "collection_id", "source_uri", "content_hash", "width", "height", "metadata", "codes", "codec_id", "created_at")
_HEX_PREFIX = re.compile(r"[0-9a-fA-F]{32,}")

# The same rule twice: in SQL for PostgreSQL, in Python (a function registered on the
# connection) for SQLite, whose hex decoding (unhex) only exists from 3.41 on.
_PG_DIGEST = (
    "CASE WHEN content_hash ~ '^[0-9a-fA-F]{32,}$' THEN decode(substr(content_hash, 1, 32), 'hex') "
    "ELSE substr(sha256(convert_to(content_hash, 'UTF8')), 1, 16) END"
)


def _digest(value: str) -> bytes:
    if _HEX_PREFIX.fullmatch(value):
        return bytes.fromhex(value[:32])
    return hashlib.sha256(value.encode("utf-8")).digest()[:16]


def _items_table(name: str, *, content_hash: sa.types.TypeEngine, created_at: sa.types.TypeEngine, now: sa.TextClause) -> None:
    """Create the items table of 0001 under ``name``, with the given content_hash / created_at types."""
    op.create_table(
        name,
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("content_hash", content_hash, nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("metadata", JSON_TYPE, nullable=False),
        sa.Column("codes", sa.LargeBinary(), nullable=False),
        sa.Column("codec_id", sa.Integer(), nullable=False),
        sa.Column("created_at", created_at, server_default=now, nullable=False),
        sa.ForeignKeyConstraint(["codec_id"], ["codecs.id"], name="fk_items_codec_id_codecs"),
        sa.ForeignKeyConstraint(
            ["collection_id"], ["collections.id"], name="fk_items_collection_id_collections", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_items"),
        sa.UniqueConstraint("collection_id", "content_hash", name="uq_items_collection_id_content_hash"),
        sqlite_autoincrement=True,
    )


def _rebuild_sqlite_items(*, content_hash: sa.types.TypeEngine, created_at: sa.types.TypeEngine, now: sa.TextClause,
                          hash_sql: str, time_sql: str) -> None:  # fmt: skip
    """Replace ``items`` by a copy with new column types, values converted by the given SQL."""
    bind = op.get_bind()
    sequence = bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'items'")).scalar()
    op.drop_index("ix_items_collection_id_id", table_name="items")
    _items_table(_TMP, content_hash=content_hash, created_at=created_at, now=now)
    converted = {"content_hash": hash_sql, "created_at": time_sql}
    select = ", ".join(converted.get(column, column) for column in _COLUMNS)
    op.execute(f"INSERT INTO {_TMP} ({', '.join(_COLUMNS)}) SELECT {select} FROM items")
    op.drop_table("items")
    op.rename_table(_TMP, "items")
    if sequence is not None:
        # The rename carried the copy's counter (the largest id still present); keep the old one.
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'items'"))
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('items', :seq)"), {"seq": sequence})
    op.create_index("ix_items_collection_id_id", "items", ["collection_id", "id"], unique=False)


def _is_sqlite() -> bool:
    context = op.get_context()
    if context.dialect.name != "sqlite":
        return False
    if context.as_sql:
        raise RuntimeError("revision 0002 converts SQLite rows through a live connection: run it without --sql")
    return True


def upgrade() -> None:
    if _is_sqlite():
        op.get_bind().connection.driver_connection.create_function("semstore_0002_digest", 1, _digest, deterministic=True)
        _rebuild_sqlite_items(
            content_hash=sa.LargeBinary(),
            created_at=sa.Integer(),
            now=SQLITE_NOW_SECONDS,
            hash_sql="semstore_0002_digest(content_hash)",
            # Integers already are Unix seconds; strftime would read them as Julian days.
            time_sql="CASE WHEN typeof(created_at) = 'integer' THEN created_at "
            "ELSE CAST(strftime('%s', created_at) AS INTEGER) END",
        )
    else:
        op.alter_column(
            "items",
            "content_hash",
            type_=sa.LargeBinary(),
            existing_type=sa.String(length=128),
            existing_nullable=False,
            postgresql_using=_PG_DIGEST,
        )


def downgrade() -> None:
    if _is_sqlite():
        _rebuild_sqlite_items(
            content_hash=sa.String(length=128),
            created_at=sa.DateTime(timezone=True),
            now=NOW,
            hash_sql="lower(hex(content_hash))",
            time_sql="strftime('%Y-%m-%d %H:%M:%S', created_at, 'unixepoch')",
        )
    else:
        op.alter_column(
            "items",
            "content_hash",
            type_=sa.String(length=128),
            existing_type=sa.LargeBinary(),
            existing_nullable=False,
            postgresql_using="encode(content_hash, 'hex')",
        )
