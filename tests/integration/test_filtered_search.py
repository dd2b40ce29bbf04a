"""Filtered search (issue #15): exact with respect to the filter at every selectivity, served
by the metadata columns held beside the index (no SQL) or by the database's metadata postings
(no scan of every item's metadata), kept in step on update and delete, by this process or
another. SQLite and PostgreSQL; ``source`` is where the filter is answered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event

import semstore
from semstore import storage
from semstore.codec import PQVAECodec
from semstore.conditions import conditions_of, matches
from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL
from semstore.filter_cache import filter_key
from tests.e2e.conftest import encode, make_image

COUNT = 200


def _settings(root: Path, url: str, *, in_memory: bool = True) -> Settings:
    return Settings(
        data_dir=root / "data", database_url=url, model=TINY_TEST_MODEL, pretrained=None,
        codec_num_subvectors=8, batch_size=32, codec_bootstrap_size=64, metadata_in_memory=in_memory,
    )  # fmt: skip


@pytest.fixture(params=["columns", "sql"])
def source(request: pytest.FixtureRequest) -> str:
    """Where filters are answered: the in-memory metadata columns, or the database."""
    return request.param


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> PQVAECodec:
    """One codec trained once for the module (training is not what these tests are about)."""
    root = tmp_path_factory.mktemp("codec")
    trainer = semstore.connect(settings=_settings(root, f"sqlite:///{root / 'c.db'}")).create_collection("c")
    trainer.add_images([(f"{i}.png", encode(make_image(5000 + i, size=40), "PNG")) for i in range(64)])
    assert trainer.codec is not None
    return trainer.codec


def _photos(url: str, root: Path, codec: PQVAECodec, source: str, name: str = "photos") -> semstore.Collection:
    settings = _settings(root, url, in_memory=source == "columns")
    collection = semstore.connect(settings=settings).create_collection(name, codec=codec)
    report = collection.add_images([(f"{i}.png", encode(make_image(i, size=40), "PNG")) for i in range(COUNT)])
    assert report.added == COUNT
    with storage.transaction(collection.database.sessions) as session:  # each item its own metadata, one commit
        for uri, item_id in report.added_items:
            i = int(uri.rsplit("/", 1)[1].removesuffix(".png"))
            meta = {"half": i % 2, "tag": f"t{i % 100}", "rare": i == 7, "score": i / 10, "nested": {"x": 1}}
            storage.update_item_metadata(session, collection_id=collection.id, item_id=item_id, metadata=meta)
    return collection


@pytest.fixture
def photos(db_url: str, tmp_path: Path, codec: PQVAECodec, source: str) -> semstore.Collection:
    """The 200 items with metadata, for one test (which may change them)."""
    return _photos(db_url, tmp_path, codec, source)


@pytest.fixture(scope="module", params=["columns", "sql"])
def shared_source(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def shared_photos(module_db_url: str, tmp_path_factory: pytest.TempPathFactory, codec: PQVAECodec, shared_source: str) -> semstore.Collection:
    """The same items, built once per backend and source for the tests that only search them."""
    return _photos(module_db_url, tmp_path_factory.mktemp("shared"), codec, shared_source, name=f"photos-{shared_source}")


def _brute_force(collection: semstore.Collection, query: np.ndarray, allowed: np.ndarray, k: int, rerank: int | None) -> np.ndarray:
    """The scores the search must return: the best allowed items by ADC, re-ranked by cosine."""
    if allowed.size == 0:
        return np.empty(0)
    codec = collection.codec
    assert codec is not None and collection.index is not None
    adc = codec.decode(collection.index.codes_for(allowed), normalize=False) @ query[0]
    if rerank is None:
        return np.sort(adc)[::-1][:k]
    best = allowed[np.argsort(-adc, kind="stable")[: max(rerank, k)]]
    cosine = codec.decode(collection.index.codes_for(best), normalize=True) @ (query[0] / np.linalg.norm(query[0]))
    return np.sort(cosine)[::-1][:k]


def _ids_with(collection: semstore.Collection, predicate) -> np.ndarray:  # noqa: ANN001
    ids = np.sort(collection.index.ids())  # type: ignore[union-attr]
    return np.asarray([i for i in ids if predicate(collection.get(int(i)).metadata)], dtype=np.int64)


@pytest.mark.parametrize(
    ("where", "predicate"),
    [
        ({"half": 1}, lambda m: m.get("half") == 1),  # 50 %
        ({"tag": "t3"}, lambda m: m.get("tag") == "t3"),  # 1 %
        ({"rare": True}, lambda m: m.get("rare") is True),  # one item
        ({"half": 0, "tag": "t4"}, lambda m: m.get("half") == 0 and m.get("tag") == "t4"),
        ({"tag": "nobody"}, lambda m: False),  # 0 %
        ({"score": 0.5}, lambda m: m.get("score") == 0.5),
        ({"half": True}, lambda m: False),  # a boolean never equals the number 1
    ],
)
@pytest.mark.parametrize("post_filter_min", [256, 8], ids=["lookup", "post-filter"])
def test_filtered_results_equal_brute_force(
    shared_photos: semstore.Collection, where: dict, predicate, post_filter_min: int, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    photos = shared_photos
    # With 8 the first probe is a small candidate list (not every item), so the post-filter
    # path (filter lookups among candidate ids) runs too, not only the full lookup.
    monkeypatch.setattr(semstore.filtered_search, "POST_FILTER_MIN", post_filter_min)
    allowed = _ids_with(photos, predicate)
    checked = 0
    for seed in range(2):
        query = photos.embed_query(image=encode(make_image(1000 + seed, size=40), "PNG"))
        for k, rerank in ((5, 100), (10, None), (50, 20)):
            hits = photos.search_vector(query, k=k, where=where, rerank=rerank)
            assert set(hit.id for hit in hits) <= set(allowed.tolist()), where  # exact w.r.t. the filter
            expected = _brute_force(photos, query, allowed, k, rerank)
            # Same scores as brute force (float32 sums may order near-ties differently).
            np.testing.assert_allclose([hit.score for hit in hits], expected, atol=2e-5, err_msg=str((where, k, rerank)))
            checked += len(hits)
    assert checked == 2 * sum(min(k, len(allowed)) for k in (5, 10, 50))


def test_a_selective_filter_reads_the_metadata_index_not_every_row(photos: semstore.Collection, source: str) -> None:
    query = photos.embed_query(text="x")
    photos.search_vector(query, k=5)
    assert (photos.index_service.columns is not None) == (source == "columns")
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append(" ".join(statement.split()).lower())

    expected = _ids_with(photos, lambda m: m.get("rare") is True).tolist()
    engines = {photos.database.engine, photos.database.reads}  # (the search path reads through the second)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        assert [hit.id for hit in photos.search_vector(query, k=5, where={"rare": True})] == expected
        assert photos.search_vector(query, k=5, where={"tag": "nobody"}) == []
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
    filters = [s for s in seen if "item_metadata" in s]
    if source == "columns":
        assert not filters and len(seen) == 2, seen  # one statement per search: its hit rows
    else:
        assert filters, seen
    # no per-row JSON scan (SQLite json_each over items.metadata, PostgreSQL containment on items)
    assert not [s for s in seen if "json_each(items.metadata" in s or "@>" in s], seen


def test_the_metadata_index_follows_updates_and_deletes(photos: semstore.Collection) -> None:
    query = photos.embed_query(text="x")
    (first,) = _ids_with(photos, lambda m: m.get("rare") is True)
    photos.update_metadata(int(first), {"rare": False, "new": "yes"})
    assert photos.search_vector(query, k=5, where={"rare": True}) == []
    assert [hit.id for hit in photos.search_vector(query, k=5, where={"new": "yes"})] == [first]
    photos.update_metadata(int(first), {"only": 1}, replace=True)
    assert photos.search_vector(query, k=5, where={"new": "yes"}) == []
    assert [hit.id for hit in photos.search_vector(query, k=5, where={"only": 1})] == [first]
    photos.delete([int(first)])
    assert photos.search_vector(query, k=5, where={"only": 1}) == []
    others = photos.search_vector(query, k=300, where={"half": 1})
    assert len(others) == COUNT // 2 - 1 and first not in {hit.id for hit in others}  # item 7 had half = 1


@pytest.mark.parametrize("source", ["sql"])
def test_a_repeated_filter_reuses_its_ids_until_any_process_writes(photos: semstore.Collection, tmp_path: Path) -> None:
    query = photos.embed_query(text="x")
    engines = {photos.database.engine, photos.database.reads}
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append(" ".join(statement.split()).lower())

    where = {"tag": "t3"}  # 2 of 200 items: the looked-up path, whose ids are remembered
    first = [hit.id for hit in photos.search_vector(query, k=5, where=where)]
    assert sorted(first) == _ids_with(photos, lambda m: m.get("tag") == "t3").tolist() and len(first) == 2
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        assert [hit.id for hit in photos.search_vector(query, k=5, where=where)] == first
        assert not [s for s in seen if "item_metadata" in s], seen  # no lookup: remembered ids
        # Another process (a second Database) tags one more item: the revision changed, so
        # the remembered ids are not trusted and the new item is found.
        other = semstore.connect(settings=photos.database.settings).collection("photos")
        extra = int(_ids_with(photos, lambda m: m.get("tag") == "t4")[0])
        other.update_metadata(extra, {"tag": "t3"})
        other.database.close()
        seen.clear()
        again = {hit.id for hit in photos.search_vector(query, k=5, where=where)}
        assert again == set(first) | {extra}
        assert [s for s in seen if "item_metadata" in s], seen  # looked up again
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("source", ["sql"])
def test_a_known_match_count_skips_the_probe_and_a_stale_one_stays_exact(
    photos: semstore.Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(semstore.filtered_search, "POST_FILTER_MIN", 8)  # k = 5, no re-rank: a 20-item probe
    query = photos.embed_query(text="x")
    where = {"tag": "t3"}
    probes: list[int] = []
    index = photos.index
    assert index is not None
    real_search = type(index).search

    def counting(self, queries, k, **options):  # noqa: ANN001, ANN003, ANN202
        if not options:  # (the post-filter probe: no rerank, no allowed ids)
            probes.append(k)
        return real_search(self, queries, k, **options)

    monkeypatch.setattr(type(index), "search", counting)
    photos.search_vector(query, k=5, where=where, rerank=None)
    assert probes  # first use: probe, then the lookup, which leaves the count
    assert photos.filters.count(filter_key(where)) == len(_ids_with(photos, lambda m: m.get("tag") == "t3"))
    photos.filters.forget(filter_key(where))  # as a write does: the ids go, the count stays
    probes.clear()
    photos.search_vector(query, k=5, where=where, rerank=None)
    assert probes == []  # known to be selective: straight to the lookup

    # The filter then matches half the collection: the stale count sends it to the lookup once,
    # which is still exact and corrects the count.
    half = _ids_with(photos, lambda m: m.get("half") == 1)
    with storage.transaction(photos.database.sessions) as session:
        for item_id in half.tolist():
            storage.update_item_metadata(session, collection_id=photos.id, item_id=item_id, metadata={"tag": "t3"})
    allowed = _ids_with(photos, lambda m: m.get("tag") == "t3")
    hits = photos.search_vector(query, k=10, where=where, rerank=None)
    np.testing.assert_allclose([hit.score for hit in hits], _brute_force(photos, query, allowed, 10, None), atol=2e-5)
    assert photos.filters.count(filter_key(where)) == len(allowed)


def _statements(photos: semstore.Collection) -> tuple[list[str], object]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append(" ".join(statement.split()).lower())

    engines = {photos.database.engine, photos.database.reads}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)

    def stop() -> None:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)

    return seen, stop


@pytest.mark.parametrize("source", ["columns"])
def test_the_columns_follow_own_and_foreign_writes_and_reload_only_for_foreign_metadata(
    photos: semstore.Collection,
) -> None:
    query = photos.embed_query(text="x")
    photos.search_vector(query, k=5)
    service = photos.index_service
    columns = service.columns
    assert columns is not None and columns.keys == ["half", "rare", "score", "tag"]  # ("nested": not a scalar)

    # own writes: applied in place, found without any filter SQL
    (seven,) = _ids_with(photos, lambda m: m.get("rare") is True)
    photos.update_metadata(int(seven), {"camera": "leica"})
    added = photos.add_images([("new.png", encode(make_image(4321, size=40), "PNG"))], metadata={"camera": "leica"})
    (new_id,) = [i for _, i in added.added_items]
    seen, stop = _statements(photos)
    try:
        hits = photos.search_vector(query, k=5, where={"camera": "leica"})
    finally:
        stop()
    assert sorted(hit.id for hit in hits) == sorted([int(seven), new_id])
    assert service.columns is columns and not [s for s in seen if "item_metadata" in s], seen

    # another process adds and deletes: caught up from the ids, no reload
    other = semstore.connect(settings=photos.database.settings).collection("photos")
    report = other.add_images([("other.png", encode(make_image(9876, size=40), "PNG"))], metadata={"camera": "leica"})
    (other_id,) = [i for _, i in report.added_items]
    other.delete([new_id])
    assert sorted(h.id for h in photos.search_vector(query, k=5, where={"camera": "leica"})) == sorted([int(seven), other_id])
    assert service.columns is columns
    # another process changes metadata: the columns are read again
    other.update_metadata(int(seven), {"camera": "nikon"})
    other.database.close()
    assert [h.id for h in photos.search_vector(query, k=5, where={"camera": "leica"})] == [other_id]
    assert [h.id for h in photos.search_vector(query, k=5, where={"camera": "nikon"})] == [int(seven)]
    assert service.columns is not columns and service.columns is not None
    # the collection's stats show what the columns hold
    state = service.describe()
    assert state is not None and "camera" in state.metadata_keys and state.metadata_bytes > 0


def test_a_key_with_too_many_values_is_answered_by_the_database(db_url: str, tmp_path: Path, photos: semstore.Collection) -> None:
    settings = _settings(tmp_path, db_url).model_copy(update={"metadata_max_distinct": 50})  # "tag" has 100 values
    narrow = semstore.connect(settings=settings).collection("photos")
    query = narrow.embed_query(text="x")
    narrow.search_vector(query, k=5)
    columns = narrow.index_service.columns
    assert columns is not None and "tag" not in columns.keys and "half" in columns.keys
    seen, stop = _statements(narrow)
    try:
        for where in ({"tag": "t3"}, {"tag": "t3", "half": 1}):
            allowed = _ids_with(narrow, lambda m, w=where: all(m.get(k) == v for k, v in w.items()))
            hits = narrow.search_vector(query, k=5, where=where, rerank=None)
            np.testing.assert_allclose([hit.score for hit in hits], _brute_force(narrow, query, allowed, 5, None), atol=2e-5)
            assert {hit.id for hit in hits} <= set(allowed.tolist())
    finally:
        stop()
    assert [s for s in seen if "item_metadata" in s], seen


@pytest.mark.parametrize("source", ["columns"])
def test_the_columns_know_a_selective_filter_before_its_first_use(photos: semstore.Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(semstore.filtered_search, "POST_FILTER_MIN", 8)  # k = 5, no re-rank: a 20-item probe
    query = photos.embed_query(text="x")
    photos.search_vector(query, k=5)
    index = photos.index
    assert index is not None
    probes: list[int] = []
    real_search = type(index).search

    def counting(self, queries, k, **options):  # noqa: ANN001, ANN003, ANN202
        if not options:
            probes.append(k)
        return real_search(self, queries, k, **options)

    monkeypatch.setattr(type(index), "search", counting)
    photos.search_vector(query, k=5, where={"tag": "t3"}, rerank=None)  # 2 of 200: straight to the matching ids
    assert probes == []
    photos.search_vector(query, k=5, where={"half": 1}, rerank=None)  # 100 of 200: the probe finds enough
    assert probes == [20]


OPERATOR_FILTERS = [
    {"score": {"$gte": 5, "$lt": 7.5}},  # numbers: a range
    {"tag": {"$in": ["t3", "t4", "nobody"]}},
    {"tag": {"$gt": "t95"}},  # strings: by code point
    {"half": {"$ne": 1}},
    {"rare": {"$ne": True}},
    {"nested": {"$exists": True}},  # an object is not filterable: no item
    {"nested": {"$exists": False}},
    {"tag": {"$nin": ["t1", "t2"]}, "half": 1},
    {"missing": {"$exists": False}, "score": {"$lte": 1}},
    {"half": {"$in": [True, 1]}},  # a boolean never equals the number 1: the 1s only
]


@pytest.mark.parametrize("where", OPERATOR_FILTERS, ids=[str(w) for w in OPERATOR_FILTERS])
def test_operator_filters_equal_brute_force(shared_photos: semstore.Collection, where: dict) -> None:
    photos = shared_photos
    def satisfies(metadata: dict) -> bool:
        def holds(key: str, value: object) -> bool:
            present = key in metadata and isinstance(metadata[key], str | int | float | bool)
            return all(matches(c, present, metadata.get(key)) for c in conditions_of(value))

        return all(holds(key, value) for key, value in where.items())

    allowed = _ids_with(photos, satisfies)
    with photos.database.sessions() as session:
        assert storage.filter_item_ids(session, collection_id=photos.id, where=where).tolist() == allowed.tolist()
    query = photos.embed_query(image=encode(make_image(1001, size=40), "PNG"))
    for k, rerank in ((5, 100), (50, None)):
        hits = photos.search_vector(query, k=k, where=where, rerank=rerank)
        assert {hit.id for hit in hits} <= set(allowed.tolist())
        np.testing.assert_allclose([hit.score for hit in hits], _brute_force(photos, query, allowed, k, rerank), atol=2e-5)
