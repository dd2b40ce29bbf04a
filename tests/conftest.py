"""Shared pytest fixtures: a fresh database per test, on SQLite and on PostgreSQL.

``db_url`` is parametrized over ``sqlite`` (a file in ``tmp_path``) and ``postgres``
(marked ``postgres``): each PostgreSQL test gets its own freshly created database,
dropped afterwards. The server comes from ``SEMSTORE_TEST_PG_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). An unreachable server fails
the test, unless ``SEMSTORE_SKIP_PG=1`` (then the PostgreSQL variants are skipped).
Deselect them with ``-m "not postgres"``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_admin_engine() -> tuple[Engine, str]:
    from semstore.storage import normalize_database_url

    base_url = normalize_database_url(os.environ.get("SEMSTORE_TEST_PG_URL", DEFAULT_PG_URL))
    engine = create_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    return engine, base_url


@contextmanager
def _fresh_postgres_database() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped (WITH (FORCE)) afterwards."""
    if os.environ.get("SEMSTORE_SKIP_PG") == "1":
        pytest.skip("SEMSTORE_SKIP_PG=1")
    admin, base_url = _pg_admin_engine()
    name = f"semstore_test_{uuid.uuid4().hex[:16]}"
    error: Exception | None = None
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any connection/driver error means the server is unusable
        error = exc
    if error is not None:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL at {make_url(base_url).render_as_string(hide_password=True)} is unreachable: {error}\n"
            "Start it (e.g. `pg_ctlcluster <version> main start`), point SEMSTORE_TEST_PG_URL at a server, "
            "deselect with -m 'not postgres', or set SEMSTORE_SKIP_PG=1 to skip these tests.",
            pytrace=False,
        )
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped (WITH (FORCE)) after the test."""
    with _fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """As ``db_url``, one database per test module (for fixtures that tests only read)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('module-db') / 'semstore.db'}"
        return
    with _fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a fresh, empty (not migrated) database: SQLite file or PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'semstore.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    """An engine on a freshly migrated database (see ``db_url``)."""
    from semstore.storage import create_db_engine, upgrade_head

    upgrade_head(db_url)
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_sessions(db_engine: Engine) -> sessionmaker[Session]:
    """A session factory on the migrated database of ``db_engine``."""
    from semstore.storage import session_factory

    return session_factory(db_engine)
