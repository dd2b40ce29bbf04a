"""Alembic environment for semstore.

The database URL comes from ``config.attributes["sqlalchemy.url"]`` (set by
``semstore.storage.migrate.upgrade_head``), else the ``sqlalchemy.url`` ini option,
else ``semstore.config.get_settings().resolved_database_url()``.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from semstore.storage.engine import normalize_database_url
from semstore.storage.errors import MigrationError
from semstore.storage.migrate import migration_engine, migration_lock
from semstore.storage.models import Base

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("sqlalchemy.url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from semstore.config import get_settings

        url = get_settings().resolved_database_url()
    return normalize_database_url(str(url))


def run_migrations_offline() -> None:
    """Emit the migration SQL without a database connection (``alembic upgrade --sql``)."""
    url = _database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=is_sqlite,
        # SQLite's DDL is transactional; migration_engine makes pysqlite honour that.
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if is_sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise MigrationError(f"migration left rows violating foreign keys: {broken[:5]}")
    if connection.in_transaction():
        connection.commit()


def run_migrations_online() -> None:
    """Run the migrations on a live connection, under the cross-process migration lock."""
    engine = migration_engine(_database_url())
    try:
        with engine.connect() as connection, migration_lock(connection):
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
