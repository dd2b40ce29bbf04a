"""Engine, session factory and transaction helper for SQLite and PostgreSQL."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from semstore.files import create_private_file
from semstore.storage.errors import StorageError

#: Applied to every new SQLite connection. WAL lets readers run beside one writer,
#: FULL makes a commit durable across power loss, and the busy timeout makes a
#: second writer wait instead of failing at once.
SQLITE_PRAGMAS: tuple[str, ...] = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


def normalize_database_url(url: str) -> str:
    """Return ``url`` with PostgreSQL URLs pointed at the psycopg (3) driver.

    ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``; URLs that
    already name a driver, and all other databases, are returned unchanged.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


#: The databases semstore runs on.
SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def _parse(url: str) -> URL:
    try:
        parsed = make_url(normalize_database_url(url))
    except Exception as exc:  # sqlalchemy raises ArgumentError; keep our own type
        hint = f" (a SQLite file is sqlite:///{url})" if "://" not in url else ""
        raise StorageError(f"invalid database URL: {url!r}{hint}") from exc
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise StorageError(
            f"unsupported database {parsed.get_backend_name()!r} in {parsed.render_as_string(hide_password=True)!r}: "
            "semstore runs on SQLite (sqlite:///PATH) and PostgreSQL (postgresql://USER@HOST/DB)"
        )
    return parsed


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = _parse(url)
    return _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database).expanduser()


def create_db_engine(url: str, *, sqlite_pragmas: Sequence[str] = SQLITE_PRAGMAS, **engine_kwargs: Any) -> Engine:
    """Create an :class:`~sqlalchemy.Engine` for ``url`` (SQLite or PostgreSQL).

    For a SQLite file the parent directory (0700) and the file (0600: SQLite gives its
    ``-wal`` and ``-shm`` files the same mode) are created if missing, and every new connection runs
    ``sqlite_pragmas`` (default :data:`SQLITE_PRAGMAS`). PostgreSQL URLs are
    normalized to the psycopg driver (see :func:`normalize_database_url`). Extra
    keyword arguments go to :func:`sqlalchemy.create_engine`.
    """
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            create_private_file(path)
        engine = create_engine(parsed, **engine_kwargs)
        pragmas = tuple(sqlite_pragmas)

        @event.listens_for(engine, "connect")
        def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
            _ensure_math_functions(dbapi_connection)
            cursor = dbapi_connection.cursor()
            try:
                for pragma in pragmas:
                    cursor.execute(pragma)
            finally:
                cursor.close()

        return engine
    if backend == "postgresql":
        engine_kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **engine_kwargs)


def read_engine(engine: Engine) -> Engine:
    """An engine for the search path's read-only statements, outside any transaction.

    On PostgreSQL its own pool (of the same size) hands out connections in autocommit
    mode and without a pre-ping: a search then costs its own statements' round trips only
    (here about 0.1 ms each), not also a ping, a BEGIN and a ROLLBACK. Each statement still
    sees every transaction committed before it. A connection the server dropped is found
    by the statement that fails on it (SQLAlchemy then invalidates it and the pool's older
    connections), and ``Collection.search_vector`` retries once on a new one.
    SQLite's driver opens no transaction for a SELECT and has nothing to ping: the engine
    itself serves.
    """
    if engine.dialect.name != "postgresql":
        return engine
    return create_engine(
        engine.url, pool_pre_ping=False, isolation_level="AUTOCOMMIT",
        pool_size=engine.pool.size(), max_overflow=engine.pool._max_overflow,  # type: ignore[attr-defined]
    )  # fmt: skip


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``.

    Objects stay usable after commit (``expire_on_commit=False``) so repository
    results can be returned from a :func:`transaction` block.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Open a session and a transaction; commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session


_MATH_FUNCTIONS = {"sin": math.sin, "cos": math.cos, "asin": math.asin, "sqrt": math.sqrt, "radians": math.radians}


def _ensure_math_functions(dbapi_connection: Any) -> None:
    """The SQL math functions the GPS radius filter uses, where this SQLite build lacks them
    (they are a compile-time option: SQLITE_ENABLE_MATH_FUNCTIONS)."""
    try:
        dbapi_connection.execute("SELECT asin(0), sin(0), cos(0), sqrt(1), radians(0)").fetchall()
    except sqlite3.OperationalError:
        for name, function in _MATH_FUNCTIONS.items():
            dbapi_connection.create_function(name, 1, function, deterministic=True)
