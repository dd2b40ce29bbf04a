"""Shards of a collection (issue #16's building block): each shard's index holds exactly the
items with ``id % count == number``, catches up from the database like a replica, and the
merged answer of all shards equals one exhaustive index's. SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import semstore
from semstore import storage
from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL
from semstore.index_service import IndexService
from semstore.sharding import ShardCandidates, merge_candidates, search_shards
from semstore.storage import Shard, shards_of
from tests.e2e.conftest import encode, make_image


def _settings(tmp_path: Path, url: str, name: str) -> Settings:
    return Settings(
        data_dir=tmp_path / name, database_url=url, model=TINY_TEST_MODEL, pretrained=None,
        codec_num_subvectors=8, batch_size=8, codec_bootstrap_size=32, index_kind="exhaustive",
    )  # fmt: skip


def _images(start: int, count: int) -> list[tuple[str, bytes]]:
    return [(f"img{i}.png", encode(make_image(i, size=48), "PNG")) for i in range(start, start + count)]


def _all_ids(db: semstore.Database, collection: semstore.Collection) -> np.ndarray:
    with db.sessions() as session:
        return storage.item_ids(session, collection_id=collection.id)


def _queries(collection: semstore.Collection) -> np.ndarray:
    texts = [collection.embed_query(text=t) for t in ("a red circle", "a blue square", "green")]
    rng = np.random.default_rng(3)
    random = rng.standard_normal((3, collection.dim)).astype(np.float32)
    return np.concatenate([*texts, random / np.linalg.norm(random, axis=1, keepdims=True)])


def _assert_same_answer(expected: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray]) -> None:
    """Same scores, and the same ids in the same order except among near-ties (float32 sums in
    another order: items whose scores differ by less than 1e-5 may swap places)."""
    np.testing.assert_allclose(got[0], expected[0], rtol=0, atol=1e-5)
    for row_scores, row_expected, row_got in zip(expected[0], expected[1].tolist(), got[1].tolist()):
        for position, (want, found) in enumerate(zip(row_expected, row_got)):
            if want != found:
                ties = {i for i, s in zip(row_expected, row_scores) if abs(s - row_scores[position]) <= 1e-5}
                # (an id not in the expected row at all: a tie at the k-th place, its score checked above)
                assert found in ties or found not in row_expected, (position, want, found)


def test_shards_hold_their_items_and_merge_to_the_whole_index_answer(db_url: str, tmp_path: Path) -> None:
    db = semstore.connect(settings=_settings(tmp_path, db_url, "one"))
    try:
        collection = db.create_collection("photos")
        assert collection.add_images(_images(0, 40), metadata={"part": "a"}).added == 40
        assert collection.add_images(_images(40, 17), metadata={"part": "b"}).added == 17
        whole = collection.index
        assert whole is not None and len(whole) == 57
        shards = shards_of(3)
        indexes = [db.shard_index_service(collection, shard).fresh() for shard in shards]
        everything = _all_ids(db, collection)
        for shard, index in zip(shards, indexes):
            assert index is not None
            assert index.ids().tolist() == everything[everything % 3 == shard.number].tolist()
        assert sorted(np.concatenate([index.ids() for index in indexes]).tolist()) == everything.tolist()

        with db.sessions() as session:
            part_b = storage.filter_item_ids(session, collection_id=collection.id, where={"part": "b"})
        assert len(part_b) == 17
        for query in _queries(collection):
            q = query.reshape(1, -1)
            for k, rerank in ((5, None), (20, None), (5, 10), (10, 100), (57, 100)):
                _assert_same_answer(whole.search(q, k, rerank=rerank), search_shards(indexes, q, k, rerank=rerank))
                _assert_same_answer(
                    whole.search(q, k, rerank=rerank, allowed_ids=part_b),
                    search_shards(indexes, q, k, rerank=rerank, allowed_ids=part_b),
                )

        # This process's own later writes reach the shard indexes too (they catch up).
        assert collection.add_images(_images(57, 9)).added == 9
        collection.delete(everything[:4].tolist())
        everything = _all_ids(db, collection)
        for shard in shards:
            index = db.shard_index_service(collection, shard).fresh()
            assert index is not None and index.ids().tolist() == everything[shard.holds(everything)].tolist()
    finally:
        db.close()


def test_shard_replicas_catch_up_and_restart_from_their_saved_index(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer_db = semstore.connect(settings=_settings(tmp_path, db_url, "writer"))
    writer = writer_db.create_collection("photos")
    assert writer.add_images(_images(0, 40)).added == 40
    replica_db = semstore.connect(settings=_settings(tmp_path, db_url, "replica"))
    shard = Shard(1, 2)
    replica = replica_db.collection("photos")
    service = replica_db.shard_index_service(replica, shard)
    assert replica_db.shard_index_service(replica, shard) is service
    first = service.fresh()
    assert first is not None and len(first) == sum(shard.holds(_all_ids(writer_db, writer)))

    # Another process adds and deletes: the shard sees exactly its part of that.
    assert writer.add_images(_images(40, 11)).added == 11
    writer.delete(_all_ids(writer_db, writer)[:5].tolist())
    everything = _all_ids(writer_db, writer)
    caught_up = service.fresh()
    assert caught_up is first  # caught up in place, not rebuilt
    assert caught_up.ids().tolist() == everything[shard.holds(everything)].tolist()
    replica_db.close()  # saves the shard index

    saved = replica_db.shard_index_root(replica) / shard.label
    assert saved.is_dir() and replica_db.index_directory(replica) != saved
    restarted_db = semstore.connect(settings=_settings(tmp_path, db_url, "replica"))
    try:
        def no_build(self: IndexService, *args: object) -> object:
            raise AssertionError("a valid saved shard index must be loaded, not rebuilt")

        monkeypatch.setattr(IndexService, "_build", no_build)
        restarted = restarted_db.collection("photos")
        loaded = restarted_db.shard_index_service(restarted, shard).fresh()
        assert loaded is not None and loaded.ids().tolist() == everything[shard.holds(everything)].tolist()
        monkeypatch.undo()

        restarted_db.delete_collection("photos")
        assert not saved.exists()
    finally:
        restarted_db.close()
        writer_db.close()


def test_merge_of_empty_and_partial_shards() -> None:
    nothing = merge_candidates([], 3, None)
    assert nothing[1].tolist() == [[-1, -1, -1]] and np.isneginf(nothing[0]).all()

    a = ShardCandidates(np.array([0.9, 0.5], np.float32), np.array([3, 6]), np.array([0.2, 0.8], np.float32))
    b = ShardCandidates(np.array([0.7], np.float32), np.array([4]), np.array([0.9], np.float32))
    scores, ids = merge_candidates([a, b], 2, None)  # ADC order
    assert ids.tolist() == [[3, 4]] and scores[0].tolist() == pytest.approx([0.9, 0.7])
    scores, ids = merge_candidates([a, b], 2, 2)  # the 2 best ADC candidates (3, 4), ranked by cosine
    assert ids.tolist() == [[4, 3]] and scores[0].tolist() == pytest.approx([0.9, 0.2])
    scores, ids = merge_candidates([a, b], 4, 3)  # fewer candidates than k: padded
    assert ids.tolist() == [[4, 6, 3, -1]]
    with pytest.raises(ValueError, match="cosines"):
        merge_candidates([ShardCandidates(a.adc, a.ids, None)], 2, 5)


@pytest.mark.parametrize(("number", "count", "error"), [(3, 3, ValueError), (-1, 2, ValueError), (0, 0, ValueError), (True, 2, TypeError)])
def test_bad_shards_are_refused(number: object, count: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        Shard(number, count)  # type: ignore[arg-type]


def test_shard_membership() -> None:
    shard = Shard(2, 4)
    assert shard.holds([1, 2, 6, 7, 10]).tolist() == [False, True, True, False, True]
    assert shard.label == "shard-2-of-4" and shards_of(2) == [Shard(0, 2), Shard(1, 2)]
