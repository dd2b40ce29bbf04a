"""Repository functions: every read and write of the database goes through here.

All functions take a :class:`~sqlalchemy.orm.Session` first (the read-only ones marked
``Reader`` also a plain :class:`~sqlalchemy.engine.Connection`, as the search path uses) and
keyword-only arguments after it. They never commit: the caller owns the transaction (see
:func:`semstore.storage.engine.transaction`), so an item and its codes, or a batch
of items and the collection revision bump, commit or roll back together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

import numpy as np
from sqlalchemy import (
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from semstore.storage.errors import (
    ApiKeyExistsError,
    ApiKeyNotFoundError,
    CodecNotFoundError,
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptCodesError,
    DuplicateItemError,
    ItemNotFoundError,
)
from semstore.storage.models import API_KEY_SCOPES, ApiKey, Codec, Collection, Item, ItemExif
from semstore.storage.shards import Shard
from semstore.storage.types import digest_bytes
from semstore.validation import check_metadata, check_text

#: Largest number of bound values put in one ``IN (...)`` list (old SQLite builds allow 999).
IN_CHUNK_SIZE = 900

#: Rows fetched per round trip when streaming codes.
STREAM_CHUNK_ROWS = 65_536

#: Longest source URI stored (a file path or ``upload://<hash>/<name>``).
MAX_SOURCE_URI_CHARS = 4096

_T = TypeVar("_T")

#: A session or a bare connection: what the read-only functions of the search path accept.
Reader = Session | Connection
_first = itemgetter(0)
_second = itemgetter(1)

MetadataValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class NewItem:
    """An item to insert: its source, content hash, compressed codes and metadata.

    ``content_hash`` is 32 lowercase hex characters (see
    :func:`semstore.ingest.images.content_hash`).
    """

    source_uri: str
    content_hash: str
    codes: bytes
    codec_id: int
    width: int | None = None
    height: int | None = None
    metadata: Mapping[str, Any] | None = None
    #: ``item_exif`` columns read from the image (see :mod:`semstore.exif_fields`); None or
    #: empty: no row (no EXIF, or never read).
    exif: Mapping[str, Any] | None = None


class CollectionState(NamedTuple):
    """What a built index records to detect that it is stale (``max_id`` is 0 when empty)."""

    count: int
    max_id: int
    revision: int


def _chunks(values: Sequence[_T], size: int = IN_CHUNK_SIZE) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _now() -> datetime:
    return datetime.now(UTC)


def _dialect(session: Reader) -> str:
    if isinstance(session, Connection):
        return session.dialect.name
    return session.get_bind().dialect.name


def _is_unique_violation(exc: IntegrityError) -> bool:
    # psycopg exposes the SQLSTATE; sqlite3 only a message.
    if getattr(exc.orig, "sqlstate", None) == "23505":
        return True
    return "UNIQUE constraint failed" in str(exc.orig)


#: ``session.info`` key of the ``(collection id, revision)`` pairs this session's transaction wrote.
REVISIONS_WRITTEN = "semstore.revisions_written"


def _bump_revision(session: Session, collection_id: int, *, metadata_changed: bool = False) -> None:
    bumps: dict[str, Any] = {"revision": Collection.revision + 1}
    if metadata_changed:
        bumps["metadata_revision"] = Collection.metadata_revision + 1
    result = session.execute(update(Collection).where(Collection.id == collection_id).values(**bumps))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise CollectionNotFoundError(f"no collection with id {collection_id}")
    # The row is now locked by this transaction, so this is exactly the revision it commits as;
    # an in-process index service learns from it which revisions are its own writes.
    revision = session.scalar(select(Collection.revision).where(Collection.id == collection_id))
    session.info.setdefault(REVISIONS_WRITTEN, []).append((collection_id, int(revision or 0)))


def written_revisions(session: Session) -> list[tuple[int, int]]:
    """``(collection id, revision)`` of every revision bump of the session's transaction so far."""
    return list(session.info.get(REVISIONS_WRITTEN, ()))


def forget_written_revisions(session: Session) -> None:
    """Clear the bumps recorded by :func:`written_revisions` (after a commit or rollback)."""
    session.info.pop(REVISIONS_WRITTEN, None)


class CollectionRevision(NamedTuple):
    """A collection's change counter and current codec: what an index's freshness depends on."""

    revision: int
    codec_id: int | None


def collection_revision(session: Reader, *, collection_id: int) -> CollectionRevision:
    """The revision and codec id of a collection: one primary-key lookup, whatever its size."""
    row = session.execute(
        select(Collection.revision, Collection.codec_id).where(Collection.id == collection_id)
    ).one_or_none()
    if row is None:
        raise CollectionNotFoundError(f"no collection with id {collection_id}")
    return CollectionRevision(int(row[0]), row[1])


# --------------------------------------------------------------------------- collections


def create_collection(
    session: Session, *, name: str, model: str, pretrained: str | None, dim: int, codec_id: int | None = None
) -> Collection:
    """Create a collection; raise :class:`CollectionExistsError` if the name is taken."""
    if session.scalar(select(Collection.id).where(Collection.name == name)) is not None:
        raise CollectionExistsError(f"collection {name!r} already exists")
    collection = Collection(name=name, model=model, pretrained=pretrained, dim=dim, codec_id=codec_id, revision=0)
    session.add(collection)
    try:
        session.flush()
    except IntegrityError as exc:
        if _is_unique_violation(exc):
            raise CollectionExistsError(f"collection {name!r} already exists") from exc
        raise
    return collection


def get_collection(session: Session, *, name: str) -> Collection:
    """The collection called ``name``; raise :class:`CollectionNotFoundError` if none."""
    collection = session.scalar(select(Collection).where(Collection.name == name))
    if collection is None:
        raise CollectionNotFoundError(f"no collection named {name!r}")
    return collection


def get_collection_by_id(session: Session, *, collection_id: int) -> Collection:
    """The collection with this id; raise :class:`CollectionNotFoundError` if none."""
    collection = session.get(Collection, collection_id)
    if collection is None:
        raise CollectionNotFoundError(f"no collection with id {collection_id}")
    return collection


def list_collections(session: Session) -> list[Collection]:
    """All collections, ordered by name."""
    return list(session.scalars(select(Collection).order_by(Collection.name)))


def delete_collection(session: Session, *, name: str) -> None:
    """Delete the collection called ``name`` and all its items."""
    collection = get_collection(session, name=name)
    # Explicit, so it holds even on a connection without foreign-key enforcement.
    session.execute(delete(Item).where(Item.collection_id == collection.id))
    session.delete(collection)
    session.flush()


def set_collection_codec(session: Session, *, collection_id: int, codec_id: int) -> Collection:
    """Attach a (trained) codec to a collection and bump its revision."""
    collection = get_collection_by_id(session, collection_id=collection_id)
    get_codec(session, codec_id=codec_id)
    collection.codec_id = codec_id
    session.flush()
    _bump_revision(session, collection_id)
    session.refresh(collection)
    return collection


# --------------------------------------------------------------------------- codecs


def save_codec(session: Session, *, content_hash: str, config: dict[str, Any], weights: bytes) -> Codec:
    """Store a codec, or return the stored one with the same ``content_hash`` (idempotent)."""
    existing = session.scalar(select(Codec).where(Codec.content_hash == content_hash))
    if existing is not None:
        return existing
    values = {"content_hash": content_hash, "config": dict(config), "weights": bytes(weights)}
    dialect = _dialect(session)
    if dialect in ("postgresql", "sqlite"):
        # ON CONFLICT DO NOTHING keeps concurrent savers of the same codec from failing.
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        session.execute(dialect_insert(Codec).values(**values).on_conflict_do_nothing(index_elements=["content_hash"]))
    else:
        session.add(Codec(**values))
        session.flush()
    return get_codec(session, content_hash=content_hash)


def get_codec(session: Session, *, codec_id: int | None = None, content_hash: str | None = None) -> Codec:
    """The codec with this id or content hash (give exactly one); raise :class:`CodecNotFoundError`."""
    if (codec_id is None) == (content_hash is None):
        raise ValueError("give exactly one of codec_id and content_hash")
    if codec_id is not None:
        codec = session.get(Codec, codec_id)
    else:
        codec = session.scalar(select(Codec).where(Codec.content_hash == content_hash))
    if codec is None:
        what = f"id {codec_id}" if codec_id is not None else f"content hash {content_hash!r}"
        raise CodecNotFoundError(f"no codec with {what}")
    return codec


# --------------------------------------------------------------------------- items


def add_items(session: Session, *, collection_id: int, items: Sequence[NewItem]) -> list[int]:
    """Insert ``items`` in one batched statement and return their new ids, in order.

    Bumps the collection revision. Raises :class:`DuplicateItemError` when a content
    hash repeats within ``items`` or is already stored in the collection (after which
    the caller must roll back), ``ValueError`` when one is not 32 lowercase hex
    characters, or a source URI or metadata cannot be stored (see
    :mod:`semstore.validation`). The caller commits.
    """
    if not items:
        return []
    hashes = [item.content_hash for item in items]
    for digest in hashes:
        digest_bytes(digest)
    for item in items:
        check_text(item.source_uri, "source_uri", max_chars=MAX_SOURCE_URI_CHARS, allow_empty=False)
        if item.metadata:
            check_metadata(item.metadata)
    if len(set(hashes)) != len(hashes):
        raise DuplicateItemError("the batch contains the same content_hash more than once")
    rows = [
        {
            "collection_id": collection_id,
            "source_uri": item.source_uri,
            "content_hash": item.content_hash,
            "width": item.width,
            "height": item.height,
            "metadata_": dict(item.metadata) if item.metadata else {},
            "codes": bytes(item.codes),
            "codec_id": item.codec_id,
        }
        for item in items
    ]
    # Bump first: it takes the write lock (SQLite) / row lock (PostgreSQL) early.
    _bump_revision(session, collection_id)
    try:
        result = session.execute(insert(Item).returning(Item.id, sort_by_parameter_order=True), rows)
    except IntegrityError as exc:
        if _is_unique_violation(exc):
            raise DuplicateItemError("an item with the same content_hash is already in the collection") from exc
        raise
    ids = list(result.scalars())
    exif_rows = [{**item.exif, "item_id": item_id, "collection_id": collection_id} for item, item_id in zip(items, ids) if item.exif]
    if exif_rows:
        session.execute(insert(ItemExif), exif_rows)
    return ids


def set_item_exif(session: Session, *, collection_id: int, rows: Mapping[int, Mapping[str, Any]]) -> int:
    """Store the EXIF facts of existing items of the collection (replacing any row they had;
    ids not in the collection are skipped); bumps the revision. Returns how many were stored."""
    if not rows:
        return 0
    present = set(session.scalars(select(Item.id).where(Item.collection_id == collection_id, Item.id.in_(list(rows)))))
    if not present:
        return 0
    session.execute(delete(ItemExif).where(ItemExif.item_id.in_(list(present))))
    session.execute(
        insert(ItemExif), [{**rows[i], "item_id": i, "collection_id": collection_id} for i in sorted(present)]
    )
    _bump_revision(session, collection_id)  # (not metadata_revision: the in-memory columns hold no EXIF)
    return len(present)


def item_exif(session: Reader, *, collection_id: int, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The ``item_exif`` rows (column -> value) of these items, by id (items without one are absent)."""
    found: dict[int, dict[str, Any]] = {}
    columns = [c for c in ItemExif.__table__.columns if c.name not in ("item_id", "collection_id")]
    for chunk in _chunks(list(dict.fromkeys(int(i) for i in ids))):
        stmt = select(ItemExif.item_id, *columns).where(ItemExif.collection_id == collection_id, ItemExif.item_id.in_(chunk))
        for row in session.execute(stmt):
            found[int(row[0])] = {c.name: value for c, value in zip(columns, row[1:])}
    return found


def count_items_without_exif(session: Session, *, collection_id: int) -> int:
    """How many of the collection's items have no EXIF row."""
    stmt = (
        select(func.count(Item.id))
        .outerjoin(ItemExif, ItemExif.item_id == Item.id)
        .where(Item.collection_id == collection_id, ItemExif.item_id.is_(None))
    )
    return int(session.scalar(stmt) or 0)


def items_without_exif(session: Session, *, collection_id: int, after_id: int = 0, limit: int = 1000) -> list[tuple[int, str]]:
    """``(id, source URI)`` of the collection's items above ``after_id`` that have no EXIF row
    (never read, or read and found none), ascending, at most ``limit``."""
    stmt = (
        select(Item.id, Item.source_uri)
        .outerjoin(ItemExif, ItemExif.item_id == Item.id)
        .where(Item.collection_id == collection_id, Item.id > after_id, ItemExif.item_id.is_(None))
        .order_by(Item.id)
        .limit(limit)
    )
    return [(int(i), uri) for i, uri in session.execute(stmt)]


def existing_hashes(session: Session, *, collection_id: int, hashes: Iterable[str]) -> set[str]:
    """The subset of ``hashes`` already stored in the collection.

    Raises ``ValueError`` when one is not a content hash (32 lowercase hex characters).
    """
    return _values_by_hash(session, Item.content_hash, collection_id=collection_id, hashes=hashes)


def source_uris_by_hash(session: Session, *, collection_id: int, hashes: Iterable[str]) -> set[str]:
    """The source URIs of the collection's items whose content hash is one of ``hashes``."""
    return _values_by_hash(session, Item.source_uri, collection_id=collection_id, hashes=hashes)


def _values_by_hash(session: Session, column: Any, *, collection_id: int, hashes: Iterable[str]) -> set[Any]:
    wanted = list(dict.fromkeys(hashes))
    for digest in wanted:
        digest_bytes(digest)
    found: set[Any] = set()
    for chunk in _chunks(wanted):
        found.update(session.scalars(select(column).where(Item.collection_id == collection_id, Item.content_hash.in_(chunk))))
    return found


def get_item(session: Session, *, collection_id: int, item_id: int) -> Item:
    """One item of the collection; raise :class:`ItemNotFoundError` if absent."""
    item = session.scalar(select(Item).where(Item.collection_id == collection_id, Item.id == item_id))
    if item is None:
        raise ItemNotFoundError(f"no item {item_id} in collection {collection_id}")
    return item


def get_items(session: Session, *, collection_id: int, ids: Sequence[int]) -> list[Item]:
    """The items with these ids, in the order of ``ids``; ids not in the collection are skipped."""
    wanted = [int(i) for i in ids]
    by_id: dict[int, Item] = {}
    for chunk in _chunks(list(dict.fromkeys(wanted))):
        for item in session.scalars(select(Item).where(Item.collection_id == collection_id, Item.id.in_(chunk))):
            by_id[item.id] = item
    return [by_id[i] for i in wanted if i in by_id]


def delete_items(session: Session, *, collection_id: int, ids: Sequence[int]) -> int:
    """Delete these items of the collection; return how many were deleted."""
    unique_ids = list(dict.fromkeys(int(i) for i in ids))
    deleted = 0
    for chunk in _chunks(unique_ids):
        result = session.execute(delete(Item).where(Item.collection_id == collection_id, Item.id.in_(chunk)))
        deleted += result.rowcount  # type: ignore[attr-defined]
    if deleted:
        _bump_revision(session, collection_id)
    return deleted


def update_item_metadata(
    session: Session, *, collection_id: int, item_id: int, metadata: Mapping[str, Any], replace: bool = False
) -> Item:
    """Merge ``metadata`` into the item's metadata (or replace it); bump the revision."""
    if not isinstance(metadata, Mapping):
        raise TypeError("metadata must be a mapping")
    item = get_item(session, collection_id=collection_id, item_id=item_id)
    merged = check_metadata(dict(metadata) if replace else {**(item.metadata_ or {}), **metadata})
    item.metadata_ = merged  # a new dict, so the JSON change is detected
    _bump_revision(session, collection_id, metadata_changed=True)
    session.flush()
    return item


def _stream_id_code_rows(
    session: Session, collection_id: int, after_id: int = 0, up_to_id: int | None = None, shard: Shard | None = None
) -> Iterator[list[tuple[int, bytes]]]:
    """Yield ``(id, codes)`` rows in chunks straight from the DBAPI cursor (no ORM/Row objects)."""
    table = Item.__table__
    dialect = session.get_bind().dialect
    stmt = select(table.c.id, table.c.codes).where(table.c.collection_id == int(collection_id)).order_by(table.c.id)
    if after_id:
        stmt = stmt.where(table.c.id > int(after_id))
    if up_to_id is not None:
        stmt = stmt.where(table.c.id <= int(up_to_id))
    if shard is not None:
        stmt = stmt.where(shard.condition(table.c.id))
    sql = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    pooled = session.connection().connection
    if dialect.name == "postgresql":
        # A named (server-side) cursor streams instead of buffering the whole result;
        # binary transfer skips bytea hex decoding.
        cursor = pooled.driver_connection.cursor(name=f"semstore_load_codes_{collection_id}", binary=True)  # type: ignore[union-attr]
    else:
        cursor = pooled.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(STREAM_CHUNK_ROWS):
            yield rows
    finally:
        cursor.close()


def load_codes(
    session: Session,
    *,
    collection_id: int,
    num_subvectors: int,
    dtype: np.dtype[Any] | type | str = np.uint8,
    after_id: int = 0,
    up_to_id: int | None = None,
    shard: Shard | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All ids (int64) and codes ``(n, num_subvectors)`` of the collection, ordered by id.

    ``after_id`` / ``up_to_id`` keep only ids in ``(after_id, up_to_id]`` (e.g. items added
    since an index was built); ``shard`` only that shard's items.

    Codes are stored as the little-endian bytes of each row (see :func:`pack_codes`).
    Rows are streamed from the raw DBAPI cursor and assembled with one bytes join per
    chunk, so a million items load in about a second. Raises :class:`CorruptCodesError`
    when the stored bytes do not match ``num_subvectors * itemsize`` per item.
    """
    code_dtype = np.dtype(dtype).newbyteorder("<")
    row_bytes = num_subvectors * code_dtype.itemsize
    session.flush()
    id_parts: list[np.ndarray] = []
    buffer = bytearray()
    for rows in _stream_id_code_rows(session, collection_id, after_id, up_to_id, shard):
        id_parts.append(np.fromiter(map(_first, rows), dtype=np.int64, count=len(rows)))
        buffer += b"".join(map(_second, rows))
    ids = np.concatenate(id_parts) if id_parts else np.empty(0, dtype=np.int64)
    if len(buffer) != len(ids) * row_bytes:
        raise CorruptCodesError(
            f"collection {collection_id}: {len(buffer)} code bytes for {len(ids)} items, expected {row_bytes} per item"
        )
    codes = np.frombuffer(buffer, dtype=code_dtype).reshape(len(ids), num_subvectors)
    return ids, codes.astype(code_dtype.newbyteorder("="), copy=False)


def pack_codes(codes: np.ndarray) -> list[bytes]:
    """Split an ``(n, M)`` integer code array into ``n`` little-endian byte strings, one per item."""
    array = np.asarray(codes)
    if array.ndim != 2 or array.dtype.kind not in "ui":
        raise ValueError(f"expected a 2-D integer code array, got shape {array.shape} dtype {array.dtype}")
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    blob = little.tobytes()
    step = little.shape[1] * little.dtype.itemsize
    return [blob[i : i + step] for i in range(0, len(blob), step)] if step else [b""] * len(little)


def collection_state(session: Session, *, collection_id: int) -> CollectionState:
    """Item count, largest item id (0 when empty) and revision of the collection."""
    revision = session.scalar(select(Collection.revision).where(Collection.id == collection_id))
    if revision is None:
        raise CollectionNotFoundError(f"no collection with id {collection_id}")
    count, max_id = session.execute(
        select(func.count(Item.id), func.max(Item.id)).where(Item.collection_id == collection_id)
    ).one()
    return CollectionState(count=int(count), max_id=int(max_id or 0), revision=int(revision))


class CollectionFingerprint(NamedTuple):
    """:class:`CollectionState` plus the sum of all item ids, which tells apart sets of ids
    of equal count (e.g. one item deleted and one committed late with a lower id)."""

    revision: int
    count: int
    max_id: int
    id_sum: int
    metadata_revision: int = 0


def collection_fingerprint(session: Session, *, collection_id: int, shard: Shard | None = None) -> CollectionFingerprint:
    """Revision, item count, largest id (0 when empty) and sum of ids of the collection (of
    ``shard``'s items only, if given; the revision is the collection's)."""
    counters = session.execute(
        select(Collection.revision, Collection.metadata_revision).where(Collection.id == collection_id)
    ).one_or_none()
    if counters is None:
        raise CollectionNotFoundError(f"no collection with id {collection_id}")
    stmt = select(func.count(Item.id), func.max(Item.id), func.sum(Item.id)).where(Item.collection_id == collection_id)
    if shard is not None:
        stmt = stmt.where(shard.condition(Item.id))
    count, max_id, id_sum = session.execute(stmt).one()
    return CollectionFingerprint(int(counters[0]), int(count), int(max_id or 0), int(id_sum or 0), int(counters[1]))


def metadata_revision(session: Session, *, collection_id: int) -> int:
    """How many times the metadata of the collection's existing items changed (see migration 0005)."""
    found = session.scalar(select(Collection.metadata_revision).where(Collection.id == collection_id))
    if found is None:
        raise CollectionNotFoundError(f"no collection with id {collection_id}")
    return int(found)


def item_ids(
    session: Session, *, collection_id: int, up_to_id: int | None = None, shard: Shard | None = None
) -> np.ndarray:
    """Ids (int64, ascending) of the collection's items, only those ``<= up_to_id`` (and of
    ``shard``) if given."""
    stmt = select(Item.id).where(Item.collection_id == collection_id).order_by(Item.id)
    if up_to_id is not None:
        stmt = stmt.where(Item.id <= up_to_id)
    if shard is not None:
        stmt = stmt.where(shard.condition(Item.id))
    return np.asarray(session.scalars(stmt).all(), dtype=np.int64)


def collection_stats(session: Session, *, collection_id: int) -> tuple[int, int]:
    """``(item count, total bytes of stored codes)`` of the collection."""
    count, total = session.execute(
        select(func.count(Item.id), func.coalesce(func.sum(func.length(Item.codes)), 0)).where(
            Item.collection_id == collection_id
        )
    ).one()
    return int(count), int(total)


def collection_pixels(session: Session, *, collection_id: int) -> int:
    """Total pixels of the collection's source images (for bits-per-pixel figures)."""
    total = session.scalar(
        select(func.coalesce(func.sum(Item.width * Item.height), 0)).where(Item.collection_id == collection_id)
    )
    return int(total or 0)


# --------------------------------------------------------------------------- API keys


def create_api_key(session: Session, *, name: str, key_hash: str, scope: str) -> ApiKey:
    """Store a new API key (only its hash); raise :class:`ApiKeyExistsError` on a taken name/hash."""
    if scope not in API_KEY_SCOPES:
        raise ValueError(f"scope must be one of {API_KEY_SCOPES}, got {scope!r}")
    taken = session.scalar(select(ApiKey.id).where(or_(ApiKey.name == name, ApiKey.key_hash == key_hash)))
    if taken is not None:
        raise ApiKeyExistsError(f"an API key named {name!r} or with the same hash already exists")
    key = ApiKey(name=name, key_hash=key_hash, scope=scope)
    session.add(key)
    try:
        session.flush()
    except IntegrityError as exc:
        if _is_unique_violation(exc):
            raise ApiKeyExistsError(f"an API key named {name!r} or with the same hash already exists") from exc
        raise
    return key


def find_api_key(session: Session, *, key_hash: str, include_revoked: bool = False) -> ApiKey | None:
    """The API key with this hash, or None; revoked keys only when ``include_revoked``."""
    stmt = select(ApiKey).where(ApiKey.key_hash == key_hash)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return session.scalar(stmt)


def touch_api_key(session: Session, *, key_id: int) -> None:
    """Record that the key was just used (``last_used_at``)."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=_now()))


def revoke_api_key(session: Session, *, name: str) -> ApiKey:
    """Revoke the key called ``name`` (idempotent); raise :class:`ApiKeyNotFoundError`."""
    key = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if key is None:
        raise ApiKeyNotFoundError(f"no API key named {name!r}")
    if key.revoked_at is None:
        key.revoked_at = _now()
        session.flush()
    return key


def list_api_keys(session: Session) -> list[ApiKey]:
    """All API keys (revoked ones included), ordered by name."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.name)))


