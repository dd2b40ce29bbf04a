"""Storage layer against real databases: SQLite always, PostgreSQL under the ``postgres`` marker."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.orm import Session, sessionmaker

import semstore
from semstore import storage
from semstore.ingest.images import content_hash
from semstore.storage import (
    ApiKeyExistsError,
    ApiKeyNotFoundError,
    Base,
    CodecNotFoundError,
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptCodesError,
    DuplicateItemError,
    Item,
    ItemNotFoundError,
    NewItem,
    add_items,
    collection_state,
    collection_stats,
    create_api_key,
    create_collection,
    create_db_engine,
    current_revision,
    delete_collection,
    delete_items,
    existing_hashes,
    filter_item_ids,
    find_api_key,
    get_codec,
    get_collection,
    get_item,
    get_items,
    head_revision,
    list_api_keys,
    list_collections,
    load_codes,
    pack_codes,
    revoke_api_key,
    save_codec,
    session_factory,
    set_collection_codec,
    touch_api_key,
    transaction,
    update_item_metadata,
    upgrade_head,
)

M = 16  # subvectors per code in these tests


#: Filter postings (migrations 0003, 0004) and the GIN index 0004 dropped: not mapped.
_DIALECT_FILTER_INDEXES = {("table", "item_metadata"), ("index", "ix_items_metadata"),
                           ("index", "ix_item_metadata_lookup"), ("index", "ix_item_metadata_item")}  # fmt: skip


def _schema_diff(engine: Engine) -> list[object]:
    def include(obj, name, type_, reflected, compare_to) -> bool:  # noqa: ANN001
        return (type_, name) not in _DIALECT_FILTER_INDEXES

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "include_object": include})
        return list(compare_metadata(context, Base.metadata))


def _h(name: str) -> str:
    """A valid item content hash, distinct per ``name``."""
    return content_hash(name.encode())


def _codec_id(sessions: sessionmaker[Session], content_hash: str = "codec-a") -> int:
    with transaction(sessions) as session:
        return save_codec(session, content_hash=content_hash, config={"num_subvectors": M}, weights=b"\x00weights").id


def _collection_id(sessions: sessionmaker[Session], name: str = "photos", codec_id: int | None = None) -> int:
    with transaction(sessions) as session:
        return create_collection(session, name=name, model="ViT-B-32", pretrained=None, dim=512, codec_id=codec_id).id


def _new_items(n: int, codec_id: int, *, prefix: str = "img", start: int = 0, seed: int = 0) -> list[NewItem]:
    codes = np.random.default_rng(seed).integers(0, 256, size=(n, M), dtype=np.uint8)
    return [
        NewItem(source_uri=f"file:///{prefix}/{start + i}.jpg", content_hash=_h(f"{prefix}-{start + i}"), codes=row, codec_id=codec_id)
        for i, row in enumerate(pack_codes(codes))
    ]


# --------------------------------------------------------------------------- migrations


def test_migration_creates_schema_matching_models(db_url: str) -> None:
    upgrade_head(db_url)
    engine = create_db_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) >= {"codecs", "collections", "items", "api_keys"}
        assert _schema_diff(engine) == []
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_noop_and_keeps_data(db_url: str) -> None:
    upgrade_head(db_url)
    engine = create_db_engine(db_url)
    try:
        sessions = session_factory(engine)
        with transaction(sessions) as session:
            create_collection(session, name="kept", model="m", pretrained=None, dim=8)
        upgrade_head(db_url)
        with sessions() as session:
            assert [c.name for c in list_collections(session)] == ["kept"]
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert _schema_diff(engine) == []
    finally:
        engine.dispose()


def test_concurrent_upgrades_of_a_fresh_database(db_url: str, tmp_path: Path) -> None:
    """Three processes migrating one fresh database at the same moment all succeed."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from semstore.storage import upgrade_head
        url, barrier, me, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
        (barrier / me).touch()
        deadline = time.monotonic() + 60
        while len(list(barrier.iterdir())) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        upgrade_head(url)
        """
    )
    repo_root = str(Path(semstore.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")]))}
    workers = 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, db_url, str(barrier), str(i), str(workers)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(workers)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, outputs
    engine = create_db_engine(db_url)
    try:
        assert _schema_diff(engine) == []
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        engine.dispose()


def test_alembic_command_line_reads_url_from_settings(tmp_path: Path) -> None:
    """`alembic upgrade head` from the repo root uses alembic.ini and SEMSTORE_DATABASE_URL."""
    repo_root = Path(semstore.__file__).resolve().parents[1]
    url = f"sqlite:///{tmp_path / 'cli' / 'semstore.db'}"
    env = {**os.environ, "SEMSTORE_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(repo_root / "alembic.ini"), "upgrade", "head"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    engine = create_db_engine(url)
    try:
        assert current_revision(engine) == head_revision()
        assert _schema_diff(engine) == []
    finally:
        engine.dispose()


def test_no_column_can_hold_a_float_embedding(db_engine: Engine) -> None:
    inspector = inspect(db_engine)
    forbidden = ("FLOAT", "REAL", "DOUBLE", "NUMERIC", "DECIMAL", "ARRAY", "VECTOR", "[]")
    checked = 0
    for table in inspector.get_table_names():
        for column in inspector.get_columns(table):
            rendered = column["type"].compile(dialect=db_engine.dialect).upper()
            assert not isinstance(column["type"], sa.Float | sa.Numeric | sa.ARRAY), (table, column["name"])
            assert not any(word in rendered for word in forbidden), (table, column["name"], rendered)
            checked += 1
    assert checked >= 25


def test_sqlite_connection_pragmas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'x.db'}"
    upgrade_head(url)
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("foreign_keys") == 1
            assert pragma("synchronous") == 2
            assert pragma("busy_timeout") == 30000
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- collections and codecs


def test_collection_crud(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    with transaction(db_sessions) as session:
        created = create_collection(session, name="photos", model="ViT-B-32", pretrained="laion", dim=512)
        create_collection(session, name="art", model="ViT-B-32", pretrained=None, dim=512)
    assert created.id is not None and created.revision == 0 and created.codec_id is None
    with transaction(db_sessions) as session:
        with pytest.raises(CollectionExistsError):
            create_collection(session, name="photos", model="x", pretrained=None, dim=4)
    with transaction(db_sessions) as session:
        assert [c.name for c in list_collections(session)] == ["art", "photos"]
        photos = get_collection(session, name="photos")
        assert (photos.model, photos.pretrained, photos.dim) == ("ViT-B-32", "laion", 512)
        updated = set_collection_codec(session, collection_id=photos.id, codec_id=codec_id)
        assert updated.codec_id == codec_id and updated.revision == 1
        with pytest.raises(CodecNotFoundError):
            set_collection_codec(session, collection_id=photos.id, codec_id=codec_id + 100)
    with transaction(db_sessions) as session:
        delete_collection(session, name="art")
        with pytest.raises(CollectionNotFoundError):
            get_collection(session, name="art")
        with pytest.raises(CollectionNotFoundError):
            delete_collection(session, name="art")
        assert get_collection(session, name="photos").codec_id == codec_id


def test_save_codec_is_idempotent(db_sessions: sessionmaker[Session]) -> None:
    with transaction(db_sessions) as session:
        first = save_codec(session, content_hash="abc", config={"m": 16, "k": 256}, weights=b"\x01\x02")
        again = save_codec(session, content_hash="abc", config={"ignored": True}, weights=b"other")
        other = save_codec(session, content_hash="def", config={}, weights=b"")
    assert again.id == first.id != other.id
    with db_sessions() as session:
        loaded = get_codec(session, content_hash="abc")
        assert (loaded.id, loaded.config, loaded.weights) == (first.id, {"m": 16, "k": 256}, b"\x01\x02")
        assert get_codec(session, codec_id=other.id).content_hash == "def"
        with pytest.raises(CodecNotFoundError):
            get_codec(session, content_hash="nope")
        with pytest.raises(ValueError):
            get_codec(session)
        assert session.scalar(select(func.count()).select_from(sa.table("codecs"))) == 2


# --------------------------------------------------------------------------- items


def test_add_and_get_items(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    collection_id = _collection_id(db_sessions, codec_id=codec_id)
    items = _new_items(5, codec_id)
    items[0] = NewItem("s3://b/0.png", _h("h0"), items[0].codes, codec_id, width=640, height=480, metadata={"tag": "cat"})
    with transaction(db_sessions) as session:
        ids = add_items(session, collection_id=collection_id, items=items)
        assert add_items(session, collection_id=collection_id, items=[]) == []
    assert len(ids) == 5 and ids == sorted(ids) and len(set(ids)) == 5
    with db_sessions() as session:
        fetched = get_items(session, collection_id=collection_id, ids=[ids[3], ids[0], 10**9, ids[3]])
        assert [i.id for i in fetched] == [ids[3], ids[0], ids[3]]
        first = get_item(session, collection_id=collection_id, item_id=ids[0])
        assert (first.source_uri, first.content_hash, first.width, first.height) == ("s3://b/0.png", _h("h0"), 640, 480)
        assert first.metadata_ == {"tag": "cat"} and first.codes == items[0].codes and first.codec_id == codec_id
        assert first.created_at is not None
        assert get_item(session, collection_id=collection_id, item_id=ids[1]).metadata_ == {}
        with pytest.raises(ItemNotFoundError):
            get_item(session, collection_id=collection_id + 1, item_id=ids[0])
        assert collection_state(session, collection_id=collection_id) == (5, ids[-1], 1)
        assert collection_stats(session, collection_id=collection_id) == (5, 5 * M)


def test_items_store_a_16_byte_hash_and_a_compact_timestamp(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    collection_id = _collection_id(db_sessions, codec_id=codec_id)
    before = datetime.now(UTC).replace(microsecond=0)
    with transaction(db_sessions) as session:
        (item_id,) = add_items(session, collection_id=collection_id, items=_new_items(1, codec_id))
    after = datetime.now(UTC)
    with db_sessions() as session:
        item = get_item(session, collection_id=collection_id, item_id=item_id)
        assert item.content_hash == _h("img-0") and len(item.content_hash) == 32
        assert item.created_at.utcoffset() == timedelta(0) and before <= item.created_at <= after
        sqlite = session.get_bind().dialect.name == "sqlite"
        size = "length" if sqlite else "octet_length"
        stored = session.execute(
            sa.text(f"SELECT {size}(content_hash), content_hash FROM items WHERE id = :id"), {"id": item_id}
        ).one()
        assert (stored[0], bytes(stored[1])) == (16, bytes.fromhex(_h("img-0")))
        if sqlite:
            raw = session.execute(sa.text("SELECT typeof(created_at), created_at FROM items WHERE id = :id"), {"id": item_id}).one()
            assert raw == ("integer", int(item.created_at.timestamp()))


@pytest.mark.parametrize("digest", ["h0", _h("x").upper(), _h("x") + "00", "sha256:" + _h("x")[7:], hashlib.sha256(b"x").hexdigest()])
def test_item_content_hash_must_be_32_lowercase_hex(db_sessions: sessionmaker[Session], digest: str) -> None:
    codec_id = _codec_id(db_sessions)
    collection_id = _collection_id(db_sessions, codec_id=codec_id)
    with db_sessions() as session:
        with pytest.raises(ValueError, match="32 lowercase hex"):
            add_items(session, collection_id=collection_id, items=[NewItem("u", digest, b"\x00" * M, codec_id)])
        with pytest.raises(ValueError, match="32 lowercase hex"):
            existing_hashes(session, collection_id=collection_id, hashes=[_h("y"), digest])
        assert collection_state(session, collection_id=collection_id).count == 0


def test_add_items_to_missing_collection_fails(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    with db_sessions() as session:
        with pytest.raises(CollectionNotFoundError):
            add_items(session, collection_id=12345, items=_new_items(1, codec_id))
        with pytest.raises(CollectionNotFoundError):
            collection_state(session, collection_id=12345)


def test_dedup_by_content_hash(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    photos = _collection_id(db_sessions, "photos", codec_id)
    art = _collection_id(db_sessions, "art", codec_id)
    stored = _new_items(2000, codec_id)  # more hashes than one IN-list chunk
    with transaction(db_sessions) as session:
        add_items(session, collection_id=photos, items=stored)
    probe = [item.content_hash for item in stored[::2]] + [_h("unknown-1"), _h("unknown-2")]
    with db_sessions() as session:
        assert existing_hashes(session, collection_id=photos, hashes=probe) == set(probe[:-2])
        assert existing_hashes(session, collection_id=art, hashes=probe) == set()
        assert existing_hashes(session, collection_id=photos, hashes=[]) == set()
    with db_sessions() as session:
        with pytest.raises(DuplicateItemError):
            add_items(session, collection_id=photos, items=[stored[7]])
        session.rollback()
    with db_sessions() as session:
        with pytest.raises(DuplicateItemError):
            add_items(session, collection_id=photos, items=[_new_items(1, codec_id, prefix="n")[0]] * 2)
    with transaction(db_sessions) as session:  # the same image may live in another collection
        add_items(session, collection_id=art, items=[stored[7]])
    with db_sessions() as session:
        assert collection_state(session, collection_id=photos).count == 2000
        assert collection_state(session, collection_id=art).count == 1


def test_delete_collection_removes_its_items(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    photos = _collection_id(db_sessions, "photos", codec_id)
    art = _collection_id(db_sessions, "art", codec_id)
    with transaction(db_sessions) as session:
        add_items(session, collection_id=photos, items=_new_items(10, codec_id))
        add_items(session, collection_id=art, items=_new_items(3, codec_id))
    with transaction(db_sessions) as session:
        delete_collection(session, name="photos")
    with db_sessions() as session:
        remaining = session.scalars(select(Item.collection_id)).all()
        assert remaining == [art] * 3


def test_foreign_key_cascade_deletes_items(db_sessions: sessionmaker[Session]) -> None:
    """The ON DELETE CASCADE itself works (on SQLite this needs foreign_keys=ON)."""
    codec_id = _codec_id(db_sessions)
    photos = _collection_id(db_sessions, "photos", codec_id)
    with transaction(db_sessions) as session:
        add_items(session, collection_id=photos, items=_new_items(4, codec_id))
    with transaction(db_sessions) as session:
        session.execute(sa.text("DELETE FROM collections WHERE id = :id"), {"id": photos})
    with db_sessions() as session:
        assert session.scalar(select(func.count(Item.id))) == 0


def test_delete_items(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    photos = _collection_id(db_sessions, "photos", codec_id)
    art = _collection_id(db_sessions, "art", codec_id)
    with transaction(db_sessions) as session:
        ids = add_items(session, collection_id=photos, items=_new_items(6, codec_id))
        art_ids = add_items(session, collection_id=art, items=_new_items(2, codec_id))
    with transaction(db_sessions) as session:
        before = collection_state(session, collection_id=photos)
        assert delete_items(session, collection_id=photos, ids=[ids[0], ids[5], ids[5], art_ids[0], 10**9]) == 2
        assert delete_items(session, collection_id=photos, ids=[]) == 0
    with db_sessions() as session:
        after = collection_state(session, collection_id=photos)
        assert (after.count, after.max_id, after.revision) == (4, ids[4], before.revision + 1)
        assert collection_state(session, collection_id=art).count == 2
        ids_left, _ = load_codes(session, collection_id=photos, num_subvectors=M, dtype=np.uint8)
        assert ids_left.tolist() == ids[1:5]
    with transaction(db_sessions) as session:  # ids are never reused
        new_id = add_items(session, collection_id=photos, items=_new_items(1, codec_id, prefix="again"))[0]
    assert new_id > ids[5]


def test_update_item_metadata(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    photos = _collection_id(db_sessions, "photos", codec_id)
    items = [NewItem("u", _h("h"), b"\x00" * M, codec_id, metadata={"a": 1, "b": "x"})]
    with transaction(db_sessions) as session:
        (item_id,) = add_items(session, collection_id=photos, items=items)
    with transaction(db_sessions) as session:
        merged = update_item_metadata(session, collection_id=photos, item_id=item_id, metadata={"b": "y", "c": True})
        assert merged.metadata_ == {"a": 1, "b": "y", "c": True}
    with transaction(db_sessions) as session:
        assert get_item(session, collection_id=photos, item_id=item_id).metadata_ == {"a": 1, "b": "y", "c": True}
        update_item_metadata(session, collection_id=photos, item_id=item_id, metadata={"z": 0}, replace=True)
    with db_sessions() as session:
        assert get_item(session, collection_id=photos, item_id=item_id).metadata_ == {"z": 0}
        assert collection_state(session, collection_id=photos).revision == 3
        with pytest.raises(ItemNotFoundError):
            update_item_metadata(session, collection_id=photos, item_id=item_id + 1, metadata={})


def test_filter_item_ids_compares_types(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    photos = _collection_id(db_sessions, "photos", codec_id)
    art = _collection_id(db_sessions, "art", codec_id)
    metadatas = [
        {"kind": "cat", "n": 1, "flag": True, "score": 0.5},
        {"kind": "dog", "n": 2, "flag": False, "score": 1.0},
        {"kind": "1", "n": "1", "flag": 1, "score": 2},
        {"kind": "cat", "n": 1.0, "flag": "true"},
        {"other key": "with space", "n": True},
        {},
    ]
    items = [
        NewItem(f"u{i}", _h(f"h{i}"), b"\x01" * M, codec_id, metadata=meta) for i, meta in enumerate(metadatas)
    ]
    with transaction(db_sessions) as session:
        ids = add_items(session, collection_id=photos, items=items)
        add_items(session, collection_id=art, items=items[:1])

    def ids_where(**where: object) -> list[int]:
        with db_sessions() as session:
            found = filter_item_ids(session, collection_id=photos, where=where)  # type: ignore[arg-type]
        assert found.dtype == np.int64
        return [ids.index(i) for i in found.tolist()]

    assert ids_where(kind="cat") == [0, 3]
    assert ids_where(kind="1") == [2]
    assert ids_where(n=1) == [0, 3]  # 1 == 1.0, but not "1" nor true
    assert ids_where(n="1") == [2]
    assert ids_where(n=True) == [4]
    assert ids_where(flag=True) == [0]  # not 1, not "true"
    assert ids_where(flag=False) == [1]
    assert ids_where(flag=1) == [2]
    assert ids_where(flag="true") == [3]
    assert ids_where(score=1) == [1]
    assert ids_where(score=2.0) == [2]
    assert ids_where(score=0.5) == [0]
    assert ids_where(kind="cat", n=1, flag=True) == [0]
    assert ids_where(kind="cat", flag=False) == []
    assert ids_where(missing="x") == []
    assert ids_where(**{"other key": "with space"}) == [4]
    assert ids_where() == [0, 1, 2, 3, 4, 5]
    with db_sessions() as session:
        with pytest.raises(ValueError, match="'kind'"):
            filter_item_ids(session, collection_id=photos, where={"kind": None})  # type: ignore[dict-item]
        with pytest.raises(ValueError):
            filter_item_ids(session, collection_id=photos, where={"score": float("nan")})


def test_filter_item_ids_matches_keys_with_backslashes_and_non_ascii(db_sessions: sessionmaker[Session]) -> None:
    # SQLite stores such keys escaped by json.dumps; a json_extract path never matched them.
    codec_id = _codec_id(db_sessions)
    photos = _collection_id(db_sessions, "photos", codec_id)
    keys = ["\\", "\\'", "é 漢字 🙂", "a\u2028b", "$.x", "[0]"]
    items = [NewItem(f"u{i}", _h(f"h{i}"), b"\x01" * M, codec_id, metadata={key: key, "n": i}) for i, key in enumerate(keys)]
    with transaction(db_sessions) as session:
        ids = add_items(session, collection_id=photos, items=items)
    with db_sessions() as session:
        for item_id, key in zip(ids, keys):
            assert filter_item_ids(session, collection_id=photos, where={key: key}).tolist() == [item_id], key
            assert filter_item_ids(session, collection_id=photos, where={key: key, "n": ids.index(item_id)}).tolist() == [item_id]
            assert filter_item_ids(session, collection_id=photos, where={key: "other"}).tolist() == []


def test_load_codes_round_trip_10k(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    photos = _collection_id(db_sessions, "photos", codec_id)
    n = 10_000
    codes = np.random.default_rng(7).integers(0, 256, size=(n, M), dtype=np.uint8)
    items = [NewItem(f"u{i}", _h(f"h{i}"), row, codec_id) for i, row in enumerate(pack_codes(codes))]
    with transaction(db_sessions) as session:
        ids = add_items(session, collection_id=photos, items=items)
    with db_sessions() as session:
        loaded_ids, loaded = load_codes(session, collection_id=photos, num_subvectors=M, dtype=np.uint8)
        count, code_bytes = collection_stats(session, collection_id=photos)
        state = collection_state(session, collection_id=photos)
    assert loaded_ids.dtype == np.int64 and loaded_ids.tolist() == ids
    assert loaded.shape == (n, M) and loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, codes)
    assert count == n and code_bytes / count == M  # bytes per item == code length
    assert (state.count, state.max_id) == (n, ids[-1])


def test_load_codes_uint16_empty_and_corrupt(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    photos = _collection_id(db_sessions, "photos", codec_id)
    with db_sessions() as session:
        ids, codes = load_codes(session, collection_id=photos, num_subvectors=M, dtype=np.uint8)
        assert ids.shape == (0,) and codes.shape == (0, M)
    wide = np.random.default_rng(1).integers(0, 65536, size=(50, 8), dtype=np.uint16)
    with transaction(db_sessions) as session:
        add_items(
            session,
            collection_id=photos,
            items=[NewItem(f"u{i}", _h(f"h{i}"), row, codec_id) for i, row in enumerate(pack_codes(wide))],
        )
    with db_sessions() as session:
        _, loaded = load_codes(session, collection_id=photos, num_subvectors=8, dtype=np.uint16)
        np.testing.assert_array_equal(loaded, wide)
        with pytest.raises(CorruptCodesError):
            load_codes(session, collection_id=photos, num_subvectors=M + 1, dtype=np.uint8)


def test_transaction_is_atomic(db_sessions: sessionmaker[Session]) -> None:
    codec_id = _codec_id(db_sessions)
    photos = _collection_id(db_sessions, "photos", codec_id)
    with pytest.raises(RuntimeError, match="boom"):
        with transaction(db_sessions) as session:
            add_items(session, collection_id=photos, items=_new_items(100, codec_id))
            create_collection(session, name="half-made", model="m", pretrained=None, dim=4)
            raise RuntimeError("boom")
    with db_sessions() as session:
        assert session.scalar(select(func.count(Item.id))) == 0
        assert [c.name for c in list_collections(session)] == ["photos"]
        assert collection_state(session, collection_id=photos) == (0, 0, 0)


# --------------------------------------------------------------------------- API keys


def test_api_keys(db_sessions: sessionmaker[Session]) -> None:
    with transaction(db_sessions) as session:
        reader = create_api_key(session, name="reader", key_hash="hash-r", scope="read")
        create_api_key(session, name="writer", key_hash="hash-w", scope="read-write")
        with pytest.raises(ValueError):
            create_api_key(session, name="bad", key_hash="hash-b", scope="admin")
    with transaction(db_sessions) as session:
        with pytest.raises(ApiKeyExistsError):
            create_api_key(session, name="reader", key_hash="other", scope="read")
        with pytest.raises(ApiKeyExistsError):
            create_api_key(session, name="other", key_hash="hash-w", scope="read")
    with transaction(db_sessions) as session:
        found = find_api_key(session, key_hash="hash-r")
        assert found is not None and (found.id, found.scope, found.last_used_at) == (reader.id, "read", None)
        touch_api_key(session, key_id=found.id)
        assert find_api_key(session, key_hash="missing") is None
    with transaction(db_sessions) as session:
        assert find_api_key(session, key_hash="hash-r").last_used_at is not None  # type: ignore[union-attr]
        revoked = revoke_api_key(session, name="reader")
        assert revoked.revoked_at is not None
        assert revoke_api_key(session, name="reader").revoked_at == revoked.revoked_at
        with pytest.raises(ApiKeyNotFoundError):
            revoke_api_key(session, name="nobody")
    with db_sessions() as session:
        assert find_api_key(session, key_hash="hash-r") is None
        assert find_api_key(session, key_hash="hash-r", include_revoked=True) is not None
        assert [(k.name, k.revoked_at is None) for k in list_api_keys(session)] == [("reader", False), ("writer", True)]


def test_scope_check_constraint_in_database(db_sessions: sessionmaker[Session]) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        with transaction(db_sessions) as session:
            session.execute(sa.text("INSERT INTO api_keys (name, key_hash, scope) VALUES ('x', 'y', 'admin')"))
    with db_sessions() as session:
        assert list_api_keys(session) == []


def test_every_timestamp_reads_back_as_aware_utc(db_sessions: sessionmaker[Session]) -> None:
    # server defaults (collection, codec) and Python-side "now" (key use, revocation) alike,
    # so that SQLite and PostgreSQL hand back the same kind of value
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    with transaction(db_sessions) as session:
        create_collection(session, name="stamped", model="m", pretrained=None, dim=4)
        save_codec(session, content_hash="stamp", config={}, weights=b"")
        key = create_api_key(session, name="stamper", key_hash="hash-s", scope="read")
        touch_api_key(session, key_id=key.id)
        revoke_api_key(session, name="stamper")
    after = datetime.now(UTC) + timedelta(seconds=1)
    with db_sessions() as session:
        (key,) = [k for k in list_api_keys(session) if k.name == "stamper"]
        stamps = [
            get_collection(session, name="stamped").created_at,
            get_codec(session, content_hash="stamp").created_at,
            key.created_at, key.last_used_at, key.revoked_at,
        ]
    for stamp in stamps:
        assert stamp is not None and stamp.utcoffset() == timedelta(0), stamp
        assert before <= stamp <= after


def test_filter_item_ids_among_candidates_and_search_reads_on_a_plain_connection(db_url: str) -> None:
    # The search path's reads: one pooled connection outside a transaction (autocommit on
    # PostgreSQL), candidate id lists of thousands bound as one parameter.
    upgrade_head(db_url)
    engine = create_db_engine(db_url)
    sessions = storage.session_factory(engine)
    try:
        codec_id = _codec_id(sessions)
        photos = _collection_id(sessions, "photos", codec_id)
        other = _collection_id(sessions, "other", codec_id)
        items = [
            NewItem(f"u{i}", _h(f"h{i}"), b"\x01" * M, codec_id, metadata={"m3": i % 3 == 0, "tag": f"t{i % 7}"}, width=i, height=1)
            for i in range(3_000)
        ]
        with transaction(sessions) as session:
            ids = np.asarray(add_items(session, collection_id=photos, items=items), dtype=np.int64)
            foreign = add_items(session, collection_id=other, items=items[:5])
        m3 = np.asarray([i % 3 == 0 for i in range(3_000)])
        rng = np.random.default_rng(1)
        among = np.concatenate([rng.choice(ids, 2_000, replace=False), ids[:50], np.asarray(foreign), [ids.max() + 10]])
        with storage.read_engine(engine).connect() as reader:
            found = filter_item_ids(reader, collection_id=photos, where={"m3": True}, among=among.tolist())
            np.testing.assert_array_equal(found, np.intersect1d(among, ids[m3]))
            both = filter_item_ids(reader, collection_id=photos, where={"m3": True, "tag": "t0"}, among=among.tolist())
            np.testing.assert_array_equal(both, np.intersect1d(among, ids[m3 & (np.arange(3_000) % 7 == 0)]))
            unfiltered = filter_item_ids(reader, collection_id=photos, where={}, among=among.tolist())
            np.testing.assert_array_equal(unfiltered, np.intersect1d(among, ids))
            assert filter_item_ids(reader, collection_id=photos, where={"m3": True}, among=[]).size == 0
            wanted = [int(ids[5]), int(ids[2]), int(foreign[0]), int(ids[5])]
            reads = storage.SearchReads(reader)
            rows, revision = reads.hit_rows(photos, wanted)
            assert revision == storage.collection_revision(reader, collection_id=photos)
            assert [(r.id, r.source_uri, r.metadata_, r.width) for r in rows] == [
                (int(ids[5]), "u5", {"m3": False, "tag": "t5"}, 5),
                (int(ids[2]), "u2", {"m3": False, "tag": "t2"}, 2),
                (int(ids[5]), "u5", {"m3": False, "tag": "t5"}, 5),
            ]
            assert reads.hit_rows(photos, []) == ([], revision)
            with pytest.raises(storage.CollectionNotFoundError):
                reads.hit_rows(photos + 100, wanted)
            assert reads.revision(photos) == storage.collection_revision(reader, collection_id=photos)
            assert reads.revision(photos).codec_id == codec_id
            with pytest.raises(storage.CollectionNotFoundError):
                reads.revision(photos + 100)
    finally:
        engine.dispose()
