"""The index service (issue #15): O(1) freshness, own writes applied in place, foreign writes
caught up without a rebuild, searches that never wait for an ingest. SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event

import semstore
import semstore.index_service
from semstore import storage
from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL, OpenClipEncoder
from semstore.index import ADCIndex
from tests.e2e.conftest import encode, make_image


def _settings(tmp_path: Path, url: str, name: str) -> Settings:
    return Settings(
        data_dir=tmp_path / name, database_url=url, model=TINY_TEST_MODEL, pretrained=None,
        codec_num_subvectors=8, batch_size=8, codec_bootstrap_size=32,
    )  # fmt: skip


def _images(start: int, count: int) -> list[tuple[str, bytes]]:
    return [(f"img{i}.png", encode(make_image(i, size=48), "PNG")) for i in range(start, start + count)]


@pytest.fixture
def two_processes(db_url: str, tmp_path: Path) -> Iterator[tuple[semstore.Collection, semstore.Collection]]:
    """A writer's and a replica's view of one collection (two Database objects: foreign to each other)."""
    writer_db = semstore.connect(settings=_settings(tmp_path, db_url, "writer"))
    writer = writer_db.create_collection("photos")
    assert writer.add_images(_images(0, 40)).added == 40
    replica_db = semstore.connect(settings=_settings(tmp_path, db_url, "replica"))
    replica = replica_db.collection("photos")
    assert len(replica.search_vector(writer.embed_query(text="x"), k=3)) == 3
    yield writer, replica
    writer_db.close()
    replica_db.close()


@contextmanager
def statements(collection: semstore.Collection) -> Iterator[list[str]]:
    """Every SQL statement the collection's database runs inside the block."""
    seen: list[str] = []
    engines = {collection.database.engine, collection.database.reads}  # (PostgreSQL: the search path's own pool)

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append(" ".join(statement.split()).lower())

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


@contextmanager
def counted_catch_ups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls: list[int] = []
    real = semstore.index_service.catch_up

    def counting(index, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append(len(index))
        return real(index, **kwargs)

    monkeypatch.setattr(semstore.index_service, "catch_up", counting)
    yield calls


def test_a_fresh_index_costs_one_revision_read(two_processes, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    writer, _ = two_processes
    query = writer.embed_query(text="a shape")
    writer.search_vector(query, k=5)
    with statements(writer) as seen, counted_catch_ups(monkeypatch) as calls:
        for _ in range(5):
            assert len(writer.search_vector(query, k=5)) == 5
    freshness = [s for s in seen if "from collections" in s]
    # one statement per search: the hit rows with the revision (no COUNT/MAX/SUM over items)
    assert len(seen) == 5 and len(freshness) == 5 and all("count(" not in s and "sum(" not in s and "max(" not in s for s in seen), seen
    assert calls == []


def test_own_writes_are_applied_in_place(two_processes, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    writer, _ = two_processes
    index = writer.index
    with counted_catch_ups(monkeypatch) as calls, statements(writer) as seen:
        report = writer.add_images(_images(100, 5))
        added = [item_id for _, item_id in report.added_items]
        assert writer.index is index and len(index) == 45
        assert writer.delete(added[:2]) == 2
        writer.update_metadata(added[2], {"tag": "x"})
        hits = writer.search_vector(writer.embed_query(text="x"), k=50)
    assert calls == [] and writer.index is index and len(index) == 43
    assert {hit.id for hit in hits} >= set(added[2:]) and not {hit.id for hit in hits} & set(added[:2])
    assert not [s for s in seen if "sum(" in s or "count(" in s and "from items" in s], seen
    assert writer.index_service.revision >= 0


def test_foreign_writes_deletes_and_a_recreated_collection_are_seen(two_processes, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    writer, replica = two_processes
    index = replica.index
    builds: list[int] = []
    real_build = ADCIndex.build.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(ADCIndex, "build", classmethod(lambda cls, *a, **k: builds.append(1) or real_build(cls, *a, **k)))
    report = writer.add_images(_images(200, 6))
    new_ids = [item_id for _, item_id in report.added_items]
    query = writer.embed_query(image=_images(203, 1)[0][1])
    assert replica.search_vector(query, k=1)[0].id == new_ids[3]  # the next search sees it
    assert replica.index is index and len(index) == 46 and builds == []  # caught up, not rebuilt
    writer.delete(new_ids)
    assert new_ids[3] not in {hit.id for hit in replica.search_vector(query, k=46)}
    assert len(replica.index) == 40 and builds == []
    # Deleted and re-created elsewhere: a new collection (new id, new codec) under the same name.
    writer.database.delete_collection("photos")
    again = writer.database.create_collection("photos")
    again.add_images(_images(300, 35))
    reopened = replica.database.collection("photos")
    assert reopened.id == again.id and len(reopened.index) == 35
    if reopened is replica:  # SQLite reused the id: the same object now serves the new collection
        assert replica.codec.content_hash == again.codec.content_hash  # type: ignore[union-attr]
    else:
        with pytest.raises(semstore.storage.CollectionNotFoundError):
            replica.search_vector(query, k=1)  # the old object names a collection that is gone


def test_a_search_does_not_wait_for_an_ingest(db_url: str, tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    class SlowEncoder(OpenClipEncoder):
        """The tiny model, stopping inside its first image batch until released."""

        def encode_images(self, images: Sequence) -> np.ndarray:  # noqa: ANN001
            if release.is_set() is False and len(images) > 1:
                entered.set()
                release.wait(60)
            return super().encode_images(images)

    database = semstore.connect(
        settings=_settings(tmp_path, db_url, "slow"), encoder_factory=lambda model, pretrained: SlowEncoder(model, pretrained)
    )
    photos = database.create_collection("photos")
    release.set()
    photos.add_images(_images(0, 40))
    release.clear()
    query = photos.embed_query(text="x")  # one text: never stops
    worker = threading.Thread(target=lambda: photos.add_images(_images(400, 8)))
    worker.start()
    try:
        assert entered.wait(30)
        started = time.monotonic()
        hits = photos.search_vector(query, k=5)
        assert len(hits) == 5 and time.monotonic() - started < 5  # it did not wait for the ingest
        assert photos.stats().items == 40
    finally:
        release.set()
        worker.join(60)
    assert len(photos.search_vector(query, k=50)) == 48
    database.close()


def test_a_saved_index_is_caught_up_after_a_restart(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = semstore.connect(settings=_settings(tmp_path, db_url, "one"))
    photos = first.create_collection("photos")
    photos.add_images(_images(0, 40))  # saved after the ingest
    first.close()
    other = semstore.connect(settings=_settings(tmp_path, db_url, "other"))
    other.collection("photos").add_images(_images(500, 3))  # written while "one" was down
    other.close()
    builds: list[int] = []
    real_build = ADCIndex.build.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(ADCIndex, "build", classmethod(lambda cls, *a, **k: builds.append(1) or real_build(cls, *a, **k)))
    restarted = semstore.connect(settings=_settings(tmp_path, db_url, "one")).collection("photos")
    assert len(restarted.index) == 43 and builds == []  # loaded from disk, then only the difference fetched


def test_small_writes_do_not_rewrite_the_index_file_until_close(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(semstore.index_service, "SAVE_MIN_CHANGES", 10)
    database = semstore.connect(settings=_settings(tmp_path, db_url, "saves"))
    photos = database.create_collection("photos")
    photos.add_images(_images(0, 40))
    directory = database.index_directory(photos)
    saved = {path.name: path.stat().st_mtime_ns for path in directory.iterdir()}
    assert any(name.endswith(".faiss") for name in saved)
    monkeypatch.setattr(semstore.index_service, "SAVE_MIN_FRACTION", 0.5)  # now 10 changes are needed
    before = {path.name: path.stat().st_mtime_ns for path in directory.iterdir()}
    photos.add_images(_images(800, 2))
    assert {path.name: path.stat().st_mtime_ns for path in directory.iterdir()} == before  # not rewritten
    database.close()  # saves what is unsaved
    reopened = semstore.connect(settings=_settings(tmp_path, db_url, "saves")).collection("photos")
    with counted_catch_ups(monkeypatch) as calls:
        assert len(reopened.index) == 42
    assert calls == []  # the file saved on close was current: no catch-up needed


def test_the_index_switches_to_ivf_as_the_collection_grows_and_keeps_every_item(db_url: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, db_url, "grow").model_copy(update={"ivf_min_items": 60, "ivf_nlist": 4, "ivf_nprobe": 4})
    database = semstore.connect(settings=settings)
    photos = database.create_collection("photos")
    photos.add_images(_images(0, 40))
    assert photos.stats().index_kind == "adc-pq"
    report = photos.add_images(_images(900, 30))  # 70 items: past the threshold
    stats = photos.stats()
    assert (stats.index_kind, stats.index_nlist, stats.index_nprobe) == ("ivf", 4, 4)
    index = photos.index
    assert len(index) == 70 and set(index.ids().tolist()) == {hit.id for hit in photos.search_vector(photos.embed_query(text="x"), k=70)}
    # nprobe = nlist: the IVF answer is the exhaustive one
    query = photos.embed_query(image=_images(905, 1)[0][1])
    flat = ADCIndex.build(photos.codec, index.ids(), index.codes_for(index.ids()))
    np.testing.assert_allclose(index.search(query, 5, rerank=50)[0], flat.search(query, 5, rerank=50)[0], atol=1e-5)
    (_, first_new), *_ = report.added_items
    assert photos.search_vector(query, k=1)[0].id == dict(report.added_items)["upload://" + _uri_hash(_images(905, 1)[0][1]) + "/img905.png"]
    photos.delete([first_new])
    assert len(photos.index) == 69
    database.close()
    reopened = semstore.connect(settings=settings).collection("photos")
    assert isinstance(reopened.index, semstore.index_service.IVFIndex) and len(reopened.index) == 69
    reopened.delete(reopened.index.ids()[:41].tolist())
    reopened.add_images(_images(950, 1))  # 29 items: below half the threshold
    assert reopened.stats().index_kind == "adc-pq" and len(reopened.index) == 29


def _uri_hash(data: bytes) -> str:
    from semstore.ingest import content_hash

    return content_hash(data)


def test_a_search_survives_the_server_dropping_its_connections(
    postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The search path's pool pings nothing before use (one round trip less per search): a
    # connection PostgreSQL dropped must be found by the failing statement and replaced.
    from sqlalchemy import create_engine, text

    db = semstore.connect(settings=_settings(tmp_path, postgres_url, "one"))
    try:
        photos = db.create_collection("photos")
        photos.add_images(_images(0, 40))
        query = photos.embed_query(text="a shape")
        before = [hit.id for hit in photos.search_vector(query, k=5)]
        before_filtered = [hit.id for hit in photos.search_vector(query, k=5, where={"none": 1})]
        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                killed = connection.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )).scalar_one()  # fmt: skip
        finally:
            admin.dispose()
        assert killed >= 1
        with caplog.at_level("INFO", logger="semstore.collection"):
            assert [hit.id for hit in photos.search_vector(query, k=5)] == before
        assert "dropped the connection; retrying" in caplog.text  # the dead connection was met, and replaced
        assert [hit.id for hit in photos.search_vector(query, k=5, where={"none": 1})] == before_filtered == []
    finally:
        db.close()


def test_saved_index_lives_beside_a_sqlite_file_else_in_the_data_directory(db_url: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, db_url, "where")
    with semstore.connect(settings=settings) as database:
        photos = database.create_collection("photos")
        photos.add_images(_images(0, 8))
        directory = database.index_directory(photos)
        database_file = storage.sqlite_path(database.url)
    assert any(path.suffix == ".faiss" for path in directory.iterdir())
    if database_file is not None:  # ./x.db -> ./x.db.indexes/<id>-photos: they move together
        assert directory.parent == database_file.with_name(database_file.name + ".indexes")
    else:  # PostgreSQL: per URL under the data directory
        assert directory.parent == settings.data_dir / "indexes" and directory.name.endswith("-photos")
