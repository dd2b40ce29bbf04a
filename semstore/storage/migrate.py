"""Run the Alembic migrations programmatically, safely from several processes at once.

Concurrency: on PostgreSQL the upgrade runs under a session-level advisory lock; on
SQLite it runs in one ``BEGIN IMMEDIATE`` transaction (SQLite's DDL is transactional),
so a second process waits for the first to commit and then finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from semstore.storage.engine import create_db_engine, normalize_database_url, sqlite_path
from semstore.storage.errors import (
    DatabaseNotFoundError,
    DatabaseUnreachableError,
    MigrationError,
    StorageError,
)

#: The Alembic script directory; semstore is installed editable, so it sits in the repo.
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

# Arbitrary but fixed 64-bit key ("semstore" in ASCII) for pg_advisory_lock.
_PG_MIGRATION_LOCK_KEY = int.from_bytes(b"semstore", "big")

# Foreign keys stay off while migrating SQLite: batch operations recreate tables, and
# dropping a parent table with foreign_keys=ON would cascade-delete its children.
_SQLITE_MIGRATION_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA busy_timeout=30000",
)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic :class:`~alembic.config.Config` for ``migrations/``.

    The URL is passed through ``config.attributes["sqlalchemy.url"]`` (no ini
    interpolation of ``%`` in passwords); without one, ``migrations/env.py`` falls
    back to ``semstore.config.get_settings().resolved_database_url()``.
    """
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise MigrationError(f"migrations directory not found at {MIGRATIONS_DIR}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.attributes["sqlalchemy.url"] = url
    return config


def upgrade_head(url: str, *, create: bool = True) -> None:
    """Bring the database at ``url`` to the newest schema revision (a no-op when current).

    With ``create=False`` a database that does not exist yet is not created:
    :class:`DatabaseNotFoundError` (no SQLite file, or no semstore schema in it). A server
    that cannot be reached raises :class:`DatabaseUnreachableError` naming host and cause.
    """
    if not create:
        require_database(url)
    try:
        command.upgrade(alembic_config(url), "head")
    except StorageError:
        raise
    except OperationalError as exc:
        if _is_connect_error(exc):
            raise _unreachable(url, exc) from exc
        raise MigrationError(f"database migration failed: {exc}") from exc
    except Exception as exc:
        raise MigrationError(f"database migration failed: {exc}") from exc


def require_database(url: str) -> None:
    """Raise :class:`DatabaseNotFoundError` unless ``url`` holds a semstore database already.

    Creates nothing: a missing SQLite file (or its folder) is reported, not made.
    """
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise DatabaseNotFoundError(f"no database at {path} (`semstore init` or `semstore ingest` creates one)")
    engine = create_db_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                where = path or engine.url.render_as_string(hide_password=True)
                raise DatabaseNotFoundError(f"no semstore database at {where} (`semstore init` creates one)")
    except OperationalError as exc:
        if _is_connect_error(exc):
            raise _unreachable(url, exc) from exc
        raise
    finally:
        engine.dispose()


def _is_connect_error(exc: OperationalError) -> bool:
    # Raised while opening the connection (no statement ran): refused, unknown host, auth.
    return exc.statement is None or "connection" in str(exc.orig).lower()[:200]


def _unreachable(url: str, exc: OperationalError) -> DatabaseUnreachableError:
    parsed = make_url(normalize_database_url(url))
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}" if parsed.get_backend_name() == "postgresql" else str(sqlite_path(url))
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    cause = detail.rsplit("failed:", 1)[-1].strip() or detail
    return DatabaseUnreachableError(f"cannot connect to the database at {where}: {cause}")


def head_revision() -> str:
    """The newest revision id in ``migrations/``."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise MigrationError("no migration revisions found")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database behind ``engine`` is at (None when never migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migration_engine(url: str) -> Engine:
    """An engine for running migrations on ``url`` (used by ``migrations/env.py``).

    On SQLite the driver's implicit transaction handling is switched off and every
    transaction starts with ``BEGIN IMMEDIATE``, so the DDL is atomic and concurrent
    upgraders queue on the database write lock.
    """
    url = normalize_database_url(url)
    if not url.startswith("sqlite"):
        return create_db_engine(url, poolclass=NullPool)
    engine = create_db_engine(url, sqlite_pragmas=_SQLITE_MIGRATION_PRAGMAS, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _manual_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def migration_lock(connection: Connection) -> Iterator[None]:
    """Hold the cross-process migration lock (PostgreSQL advisory lock) on ``connection``.

    On other databases this is a no-op (SQLite serializes via ``BEGIN IMMEDIATE``).
    The connection is left outside any transaction on entry.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})
    connection.commit()
    try:
        yield
    finally:
        try:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})
            connection.commit()
        except Exception:
            # Closing the server session releases its advisory locks just as well.
            connection.invalidate()
