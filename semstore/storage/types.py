"""Column types that keep an ``items`` row small while Python keeps its usual values.

* :class:`HexDigest`: a content hash is a hex string in Python and 16 raw bytes in the
  database (BLOB / bytea), half the size of its hex text and a quarter of a full SHA-256.
* :class:`UnixTime`: a timezone-aware UTC :class:`~datetime.datetime` in Python, stored as
  integer Unix seconds on SQLite (4-6 bytes instead of 19-26 characters of text) and as
  ``timestamptz`` (8 bytes) on PostgreSQL.
* :class:`UTCDateTime`: the same aware UTC datetime in Python over the database's own
  date-time column, for the tables with few rows (collections, codecs, API keys).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Integer, LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

#: Bytes of a stored content hash: the first 128 bits of the SHA-256 of the file.
DIGEST_BYTES = 16

#: Characters of a content hash in Python: :data:`DIGEST_BYTES` as lowercase hex.
DIGEST_HEX_CHARS = 2 * DIGEST_BYTES

_DIGEST = re.compile(f"[0-9a-f]{{{DIGEST_HEX_CHARS}}}")


def is_digest(value: object) -> bool:
    """Whether ``value`` is a content hash as the storage layer takes it (32 lowercase hex)."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def digest_bytes(digest: str) -> bytes:
    """The stored bytes of the content hash ``digest``; raises ``ValueError`` unless :func:`is_digest`."""
    if not is_digest(digest):
        raise ValueError(f"a content hash must be {DIGEST_HEX_CHARS} lowercase hex characters, got {digest!r}")
    return bytes.fromhex(digest)


class HexDigest(TypeDecorator[str]):
    """A content hash: :data:`DIGEST_HEX_CHARS` lowercase hex in Python, :data:`DIGEST_BYTES` bytes stored."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return None if value is None else digest_bytes(value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> str | None:
        return None if value is None else bytes(value).hex()


class UnixTime(TypeDecorator[datetime]):
    """A UTC timestamp: integer Unix seconds on SQLite, ``timestamptz`` on other databases.

    Python always gets a timezone-aware UTC datetime back. Naive datetimes given to it
    are taken as UTC (as SQLite's ``CURRENT_TIMESTAMP`` is); on SQLite the sub-second
    part is dropped.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Integer())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return calendar.timegm(value.utctimetuple())

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return datetime.fromtimestamp(int(value), UTC)
        return _as_utc(value)


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC timestamp stored as the database's own date-time type (text on SQLite).

    SQLite keeps no time zone, so SQLAlchemy reads its values back naive while PostgreSQL's
    ``timestamptz`` reads back aware; this type hands back an aware UTC datetime from both
    (values are stored in UTC: ``CURRENT_TIMESTAMP`` is, and aware values are converted).
    The column's DDL is unchanged, so no migration is involved.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _as_utc(value)


def _as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive one is taken as UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class utc_now(FunctionElement[datetime]):  # noqa: N801 - named like the SQL functions it stands for
    """Server-side "now" for a :class:`UnixTime` column: Unix seconds on SQLite, else ``CURRENT_TIMESTAMP``."""

    type = UnixTime()
    inherit_cache = True


@compiles(utc_now)
def _utc_now_default(_element: utc_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utc_now, "sqlite")
def _utc_now_sqlite(_element: utc_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    # strftime('%s') is TEXT; the cast stores an INTEGER whatever the column affinity.
    return "CAST(strftime('%s', 'now') AS INTEGER)"
