"""SQLAlchemy models of the semstore database.

Only compressed codes are persisted: no column anywhere holds a float embedding.
The Alembic revisions in ``migrations/versions/`` (0001 creates the tables, 0002 compacts
``items``, 0003-0005 add filter postings and counters, 0006 the EXIF table) build exactly these models; a test checks that the migrated schema and the
models agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from semstore.storage.types import HexDigest, UnixTime, UTCDateTime, utc_now

# Named constraints make Alembic batch operations on SQLite (which recreate tables) reliable.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON everywhere, JSONB on PostgreSQL (binary storage, ``@>`` containment for filters).
JSONType = JSON().with_variant(JSONB(), "postgresql")

#: 64-bit ids on PostgreSQL; on SQLite ``INTEGER PRIMARY KEY`` is needed to alias the rowid.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

#: Server-side timestamp default that both SQLite and PostgreSQL understand (UTC on SQLite).
NOW = text("CURRENT_TIMESTAMP")

API_KEY_SCOPES: tuple[str, ...] = ("read", "read-write")


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata (with its naming convention)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Codec(Base):
    """A trained codec, identified by the hash of its saved file (its version)."""

    __tablename__ = "codecs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(128), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    weights: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)

    def __repr__(self) -> str:
        return f"Codec(id={self.id!r}, content_hash={self.content_hash!r})"


class Collection(Base):
    """A named set of items sharing one encoder model and (once trained) one codec."""

    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    model: Mapped[str] = mapped_column(String(255))
    pretrained: Mapped[str | None] = mapped_column(Text, nullable=True)
    dim: Mapped[int] = mapped_column(Integer)
    codec_id: Mapped[int | None] = mapped_column(ForeignKey("codecs.id"), nullable=True)
    # Bumped on every item add/delete/metadata change so replicas can detect a stale index.
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Bumped when an existing item's metadata changes, so in-memory metadata columns know when to reload.
    metadata_revision: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)

    def __repr__(self) -> str:
        return f"Collection(id={self.id!r}, name={self.name!r}, revision={self.revision!r})"


class Item(Base):
    """One stored image: where it came from, its metadata and its compressed codes."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("collection_id", "content_hash"),
        Index("ix_items_collection_id_id", "collection_id", "id"),
        # Never reuse the id of a deleted item: ids are handed out to clients and indexes.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    source_uri: Mapped[str] = mapped_column(Text)
    # 16 bytes (first 128 bits of the file's SHA-256), hex in Python; see storage.types.
    content_hash: Mapped[str] = mapped_column(HexDigest())
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    codes: Mapped[bytes] = mapped_column(LargeBinary)
    codec_id: Mapped[int] = mapped_column(ForeignKey("codecs.id"))
    # Integer Unix seconds on SQLite (one row per image: every byte counts), timestamptz on PostgreSQL.
    created_at: Mapped[datetime] = mapped_column(UnixTime(), server_default=utc_now())

    def __repr__(self) -> str:
        return f"Item(id={self.id!r}, collection_id={self.collection_id!r}, source_uri={self.source_uri!r})"


class ItemExif(Base):
    """The photo facts read from an item's EXIF block at ingest (or by a backfill): typed and
    indexed for filters. A row with every field NULL means "read, no EXIF"; no row means
    "never read" (an item stored before migration 0006, until ``semstore exif-backfill``)."""

    __tablename__ = "item_exif"
    __table_args__ = (
        Index("ix_item_exif_taken_at", "collection_id", "taken_at"),
        Index("ix_item_exif_camera", "collection_id", "camera_model"),
        Index("ix_item_exif_location", "collection_id", "latitude_microdeg", "longitude_microdeg"),
    )

    item_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    collection_id: Mapped[int] = mapped_column(Integer)
    # The local wall-clock time the camera recorded, as seconds since 1970-01-01T00:00:00 of
    # that clock (no time zone applied), and the offset to UTC when the file gives one.
    taken_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    taken_at_offset_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    camera_make: Mapped[str | None] = mapped_column(String(255), nullable=True)
    camera_model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lens: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Millionths of a degree (about 11 cm): integers, so that no column anywhere holds a float.
    latitude_microdeg: Mapped[int | None] = mapped_column(Integer, nullable=True)
    longitude_microdeg: Mapped[int | None] = mapped_column(Integer, nullable=True)
    orientation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    original_width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    original_height: Mapped[int | None] = mapped_column(Integer, nullable=True)

    def __repr__(self) -> str:
        return f"ItemExif(item_id={self.item_id!r}, taken_at={self.taken_at!r}, camera_model={self.camera_model!r})"


class ApiKey(Base):
    """An API key of the HTTP server; only a hash of the secret is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("scope IN ('read', 'read-write')", name="scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def __repr__(self) -> str:
        return f"ApiKey(id={self.id!r}, name={self.name!r}, scope={self.scope!r})"
