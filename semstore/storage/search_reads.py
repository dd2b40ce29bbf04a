"""The reads of every search as fixed SQL strings: the hit rows with the collection's revision.

A search at 10^6 items costs about a millisecond in the index, so its fixed cost in the
database layer matters. Building, caching and compiling a SQLAlchemy statement and turning
its rows into objects cost 0.1-0.4 ms per statement here; these statements are fixed
strings run with ``exec_driver_sql`` on a pooled connection, in the form each driver caches
(sqlite3 keeps prepared statements by SQL text, psycopg prepares a query it has seen a few
times), and one statement brings back both the rows and the revision that says whether the
index that found them was fresh. Every other read and write goes through
:mod:`semstore.storage.repository`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection

from semstore.storage.errors import CollectionNotFoundError, StorageError
from semstore.storage.repository import CollectionRevision


class HitRow(NamedTuple):
    """What a search result shows of an item (the attributes :func:`semstore.search.hits_from_rows` reads)."""

    id: int
    source_uri: str
    metadata_: dict[str, Any] | None
    width: int | None
    height: int | None
    exif: dict[str, Any] | None = None  # item_exif columns (None: no row)


_REVISION = "SELECT revision, codec_id FROM collections WHERE id = {p}"
# The hit rows and the collection's revision in one statement (one round trip): the
# collection row always comes back, with NULLs when no item matches.
#: The ``item_exif`` columns a hit shows, in the order the hit statement selects them.
EXIF_COLUMNS = ("taken_at", "taken_at_offset_minutes", "camera_make", "camera_model", "lens", "latitude_microdeg",
                "longitude_microdeg", "orientation", "original_width", "original_height")  # fmt: skip
_EXIF_SELECT = ", ".join(f"e.{column}" for column in EXIF_COLUMNS)
_HITS = {
    # ("+i.collection_id": look the ids up by rowid, not through the (collection_id, id) index
    # and then the rowid: one B-tree search per id instead of two)
    "sqlite": f"SELECT c.revision, c.codec_id, i.id, i.source_uri, i.metadata, i.width, i.height, e.item_id, {_EXIF_SELECT} "
    "FROM collections AS c LEFT JOIN items AS i ON +i.collection_id = c.id "
    "AND i.id IN (SELECT value FROM json_each(?)) LEFT JOIN item_exif AS e ON e.item_id = i.id WHERE c.id = ?",
    "postgresql": f"SELECT c.revision, c.codec_id, i.id, i.source_uri, i.metadata, i.width, i.height, e.item_id, {_EXIF_SELECT} "
    "FROM collections AS c LEFT JOIN items AS i ON i.collection_id = c.id "
    "AND i.id = ANY(%s) LEFT JOIN item_exif AS e ON e.item_id = i.id WHERE c.id = %s",
}


class SearchReads:
    """The search path's reads through one pooled connection (SQLite or PostgreSQL)."""

    def __init__(self, connection: Connection) -> None:
        dialect = connection.dialect.name
        if dialect not in _HITS:
            raise StorageError(f"search reads are not implemented for {dialect}")
        self._sqlite = dialect == "sqlite"
        self._connection = connection
        self._revision_sql = _REVISION.format(p="?" if self._sqlite else "%s")
        self._hits_sql = _HITS[dialect]

    def revision(self, collection_id: int) -> CollectionRevision:
        """As :func:`semstore.storage.repository.collection_revision`: one primary-key lookup."""
        rows = self._fetch(self._revision_sql, (collection_id,))
        row = rows[0] if rows else None
        if row is None:
            raise CollectionNotFoundError(f"no collection with id {collection_id}")
        return CollectionRevision(int(row[0]), row[1])

    def hit_rows(self, collection_id: int, ids: Sequence[int]) -> tuple[list[HitRow], CollectionRevision]:
        """The rows of these ids in the order of ``ids`` (ids not in the collection are
        skipped), and the collection's revision as of the same statement."""
        wanted = [int(i) for i in ids]
        distinct = list(dict.fromkeys(wanted))
        fetched = self._fetch(self._hits_sql, (json.dumps(distinct) if self._sqlite else distinct, collection_id))
        if not fetched:
            raise CollectionNotFoundError(f"no collection with id {collection_id}")
        by_id = {}
        for _, _, item_id, uri, metadata, width, height, exif_id, *exif in fetched:
            if item_id is None:
                continue
            if isinstance(metadata, str | bytes):  # SQLite stores JSON text; psycopg decodes jsonb itself
                metadata = json.loads(metadata)
            facts = dict(zip(EXIF_COLUMNS, exif)) if exif_id is not None else None
            by_id[int(item_id)] = HitRow(int(item_id), uri, metadata, width, height, facts)
        revision = CollectionRevision(int(fetched[0][0]), fetched[0][1])
        return [by_id[i] for i in wanted if i in by_id], revision

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        # exec_driver_sql: no statement to build or compile, yet SQLAlchemy's events, logging,
        # error wrapping and disconnect handling (about 10 us more than a bare cursor here)
        return list(self._connection.exec_driver_sql(sql, params).fetchall())
