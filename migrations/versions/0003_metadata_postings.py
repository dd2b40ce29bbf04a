"""Indexed metadata filters: a GIN index on PostgreSQL, a postings table on SQLite.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 00:00:00

A search with a ``where`` filter that few items match looks the matching ids up instead of
scanning every item's metadata.

* PostgreSQL: ``ix_items_metadata`` (GIN, ``jsonb_path_ops``) serves ``metadata @> filter``.
* SQLite: ``item_metadata`` holds one row per scalar top-level member of an item's metadata
  (``key``, its JSON ``type`` from ``json_each``, ``value`` with BLOB affinity so
  numbers stay numbers), indexed by ``(collection_id, key, value)``. Triggers on ``items`` keep it in
  step inside the writing transaction (insert, metadata update); deleting an item
  cascades. Existing rows are backfilled here. Members that are objects, arrays or null
  are not filterable and are not stored.

Downgrade drops the index, or the triggers and the table.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INSERT = "INSERT INTO item_metadata (item_id, collection_id, key, type, value) "
_SCALARS = "member.type NOT IN ('object', 'array', 'null')"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_items_metadata ON items USING gin (metadata jsonb_path_ops)")
        return
    op.execute(
        "CREATE TABLE item_metadata ("
        " item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,"
        " collection_id INTEGER NOT NULL,"
        " key TEXT NOT NULL,"
        " type TEXT NOT NULL,"
        " value BLOB)"  # BLOB affinity converts nothing: integers, reals and texts stay as they are
    )
    op.execute("CREATE INDEX ix_item_metadata_lookup ON item_metadata (collection_id, key, value, type, item_id)")
    op.execute("CREATE INDEX ix_item_metadata_item ON item_metadata (item_id)")
    new_members = (
        _INSERT + "SELECT NEW.id, NEW.collection_id, member.key, member.type, member.value "
        f"FROM json_each(NEW.metadata) AS member WHERE {_SCALARS}; "
    )
    op.execute(f"CREATE TRIGGER items_metadata_insert AFTER INSERT ON items BEGIN {new_members}END")
    op.execute(
        "CREATE TRIGGER items_metadata_update AFTER UPDATE OF metadata ON items BEGIN "
        f"DELETE FROM item_metadata WHERE item_id = OLD.id; {new_members}END"
    )
    op.execute(
        _INSERT + "SELECT items.id, items.collection_id, member.key, member.type, member.value "
        f"FROM items, json_each(items.metadata) AS member WHERE {_SCALARS}"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_items_metadata")
        return
    op.execute("DROP TRIGGER IF EXISTS items_metadata_insert")
    op.execute("DROP TRIGGER IF EXISTS items_metadata_update")
    op.execute("DROP TABLE IF EXISTS item_metadata")
