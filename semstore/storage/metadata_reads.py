"""Reading a collection's filterable metadata from the ``item_metadata`` postings, in bulk.

What :class:`semstore.index.metadata_columns.MetadataColumns` is filled from: a whole
collection as one row per distinct ``(key, value)`` with its item ids aggregated (10^6
items with a few keys are a few thousand rows, not millions), or the postings of a few
items (those a catch-up added or an update changed). Values come back as the filter sees
them: ``kind`` is ``"bool"``, ``"text"`` or ``"number"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from semstore.storage.filters import reader_connection, unpack_ids
from semstore.storage.repository import Reader
from semstore.storage.shards import Shard

#: ``(key, kind, value, ids)``: the items (ids ascending) whose ``key`` holds this value.
ValueIds = tuple[str, str, Any, np.ndarray]
#: ``(item id, key, kind, value)``: one posting.
ItemPosting = tuple[int, str, str, Any]

_SQLITE_KINDS = {"text": "text", "integer": "number", "real": "number", "true": "bool", "false": "bool"}


def _kind_and_value(sqlite: bool, sql_type: str | None, value: Any) -> tuple[str, Any] | None:
    if sqlite:
        kind = _SQLITE_KINDS.get(str(sql_type))
        if kind is None:
            return None
        return kind, (sql_type == "true") if kind == "bool" else value
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, str):
        return "text", value
    return ("number", value) if isinstance(value, int | float) else None


def _shard_sql(shard: Shard | None) -> str:
    # (integer division on both dialects; ids are positive; literal ints, never user input)
    return "" if shard is None else f" AND item_id - (item_id / {int(shard.count)}) * {int(shard.count)} = {int(shard.number)}"


def collection_values(reader: Reader, *, collection_id: int, shard: Shard | None = None) -> Iterator[ValueIds]:
    """Every distinct ``(key, value)`` of the collection's items (``shard``'s only, if given)
    with the ids holding it."""
    connection, dialect = reader_connection(reader)
    sqlite = dialect == "sqlite"
    if sqlite:
        sql = ("SELECT key, type, value, group_concat(item_id) FROM item_metadata WHERE collection_id = ?"
               f"{_shard_sql(shard)} GROUP BY key, type, value")  # fmt: skip
    else:
        sql = ("SELECT key, NULL, value, array_agg(item_id) FROM item_metadata WHERE collection_id = %s"
               f"{_shard_sql(shard)} GROUP BY key, value")  # fmt: skip
    for key, sql_type, value, packed in connection.exec_driver_sql(sql, (collection_id,)):
        found = _kind_and_value(sqlite, sql_type, value)
        if found is not None:
            yield key, found[0], found[1], np.sort(unpack_ids(packed))


def item_postings(reader: Reader, *, collection_id: int, ids: Sequence[int]) -> list[ItemPosting]:
    """The postings of these items of the collection (ids not in it have none)."""
    if len(ids) == 0:
        return []
    connection, dialect = reader_connection(reader)
    sqlite = dialect == "sqlite"
    found: list[ItemPosting] = []
    values = sorted(int(i) for i in ids)
    for start in range(0, len(values), 50_000):
        chunk = values[start : start + 50_000]
        if sqlite:
            sql = ("SELECT item_id, key, type, value FROM item_metadata WHERE collection_id = ? "
                   "AND item_id IN (SELECT value FROM json_each(?))")  # fmt: skip
            params: tuple[Any, ...] = (collection_id, json.dumps(chunk))
        else:
            sql = ("SELECT item_id, key, NULL, value FROM item_metadata WHERE collection_id = %s "
                   "AND item_id = ANY(CAST(%s AS bigint[]))")  # fmt: skip
            params = (collection_id, chunk)
        for item_id, key, sql_type, value in connection.exec_driver_sql(sql, params):
            kind_value = _kind_and_value(sqlite, sql_type, value)
            if kind_value is not None:
                found.append((int(item_id), key, *kind_value))
    return found


