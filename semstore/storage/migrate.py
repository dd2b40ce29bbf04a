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
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.pool import NullPool

from semstore.storage.engine import create_db_engine, normalize_database_url
from semstore.storage.errors import MigrationError, StorageError

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


def upgrade_head(url: str) -> None:
    """Bring the database at ``url`` to the newest schema revision (a no-op when current)."""
    try:
        command.upgrade(alembic_config(url), "head")
    except StorageError:
        raise
    except Exception as exc:
        raise MigrationError(f"database migration failed: {exc}") from exc


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
