"""PostgreSQL metadata filters from a postings table, as on SQLite (replacing the GIN index).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 00:00:00

The GIN index of 0003 finds the items whose metadata contains a filter, but then reads every
matching row from the heap to recheck it: at 10^6 items a filter that 1 % match visited
~10^4 heap pages per search. ``item_metadata`` holds one narrow row per scalar top-level
member (``collection_id, key, value jsonb, item_id``) under a btree whose prefix is the
filter, so the matching ids come from one index range (jsonb equality compares by type:
``"1"``, ``1`` and ``true`` differ, ``1`` equals ``1.0``), the same plan as SQLite's. A
statement trigger over the inserted rows (a transition table: one INSERT ... SELECT per
batch, not one function call per item) and a row trigger on metadata updates keep it in
step inside the writing transaction; deleting an item cascades. Existing rows are backfilled.

SQLite: nothing to do (0003 built its postings already). Downgrade restores the GIN index.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SCALAR = "jsonb_typeof(member.value) IN ('string', 'number', 'boolean')"


def _members(collection_id: str, item_id: str, metadata: str, source: str = "") -> str:
    """INSERT of the scalar top-level members of ``metadata`` (an object; anything else has none)."""
    return (
        "INSERT INTO item_metadata (collection_id, key, value, item_id) "
        f"SELECT {collection_id}, member.key, member.value, {item_id} FROM {source}"
        f"jsonb_each(CASE WHEN jsonb_typeof({metadata}) = 'object' THEN {metadata} ELSE '{{}}'::jsonb END) AS member "
        f"WHERE {_SCALAR}"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE TABLE item_metadata ("
        " item_id BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,"
        " collection_id INTEGER NOT NULL,"
        " key TEXT NOT NULL,"
        " value JSONB NOT NULL)"
    )
    op.execute(_members("items.collection_id", "items.id", "items.metadata", "items, "))
    op.execute("CREATE INDEX ix_item_metadata_lookup ON item_metadata (collection_id, key, value, item_id)")
    op.execute("CREATE INDEX ix_item_metadata_item ON item_metadata (item_id)")
    op.execute(
        "CREATE FUNCTION semstore_item_metadata_inserted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        + _members("inserted.collection_id", "inserted.id", "inserted.metadata", "inserted, ")
        + "; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE FUNCTION semstore_item_metadata_updated() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "DELETE FROM item_metadata WHERE item_id = OLD.id; "
        + _members("NEW.collection_id", "NEW.id", "NEW.metadata")
        + "; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER items_metadata_insert AFTER INSERT ON items REFERENCING NEW TABLE AS inserted "
        "FOR EACH STATEMENT EXECUTE FUNCTION semstore_item_metadata_inserted()"
    )
    op.execute(
        "CREATE TRIGGER items_metadata_update AFTER UPDATE OF metadata ON items "
        "FOR EACH ROW EXECUTE FUNCTION semstore_item_metadata_updated()"
    )
    op.execute("DROP INDEX IF EXISTS ix_items_metadata")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS items_metadata_insert ON items")
    op.execute("DROP TRIGGER IF EXISTS items_metadata_update ON items")
    op.execute("DROP FUNCTION IF EXISTS semstore_item_metadata_inserted()")
    op.execute("DROP FUNCTION IF EXISTS semstore_item_metadata_updated()")
    op.execute("DROP TABLE IF EXISTS item_metadata")
    op.execute("CREATE INDEX ix_items_metadata ON items USING gin (metadata jsonb_path_ops)")
