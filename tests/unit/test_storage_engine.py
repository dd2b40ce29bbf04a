"""Engine construction, URL handling and the transaction helper (SQLite files in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from semstore.storage import (
    Base,
    Collection,
    StorageError,
    create_db_engine,
    normalize_database_url,
    session_factory,
    transaction,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgresql://u@h/db?sslmode=require", "postgresql+psycopg://u@h/db?sslmode=require"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_normalize_database_url(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


def test_postgres_urls_use_psycopg_driver() -> None:
    engine = create_db_engine("postgres://user:secret@localhost:1/db")  # lazy: never connects here
    try:
        assert engine.dialect.name == "postgresql"
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_invalid_url_raises_storage_error() -> None:
    with pytest.raises(StorageError):
        create_db_engine("not a url")


def test_sqlite_engine_creates_parent_directory_and_sets_pragmas(tmp_path: Path) -> None:
    db_file = tmp_path / "a" / "b" / "store.db"
    engine = create_db_engine(f"sqlite:///{db_file}")
    try:
        assert db_file.parent.is_dir()
        for _ in range(2):  # every pooled connection, not only the first
            with engine.connect() as connection:
                values = [
                    connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                    for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
                ]
                assert values == ["wal", 2, 1, 30000]
    finally:
        engine.dispose()


def test_in_memory_sqlite_works() -> None:
    engine = create_db_engine("sqlite://")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_transaction_commits_or_rolls_back(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 't.db'}")
    Base.metadata.create_all(engine)
    sessions = session_factory(engine)
    try:
        with transaction(sessions) as session:
            session.add(Collection(name="kept", model="m", pretrained=None, dim=4))
        with pytest.raises(KeyError):
            with transaction(sessions) as session:
                session.add(Collection(name="dropped", model="m", pretrained=None, dim=4))
                session.flush()
                raise KeyError("abort")
        with sessions() as session:
            assert session.scalars(select(Collection.name)).all() == ["kept"]
            assert session.scalar(select(func.count(Collection.id))) == 1
    finally:
        engine.dispose()


def test_objects_stay_readable_after_commit(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 't.db'}")
    Base.metadata.create_all(engine)
    try:
        with transaction(session_factory(engine)) as session:
            collection = Collection(name="c", model="m", pretrained=None, dim=4)
            session.add(collection)
        assert (collection.name, collection.revision) == ("c", 0)  # no DetachedInstanceError
    finally:
        engine.dispose()
